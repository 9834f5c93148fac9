#!/usr/bin/env node
// Entry point of the podwarp command (bin/podwarp, the image).
import { podwarpProgram, runCli } from './cli.js';

await runCli(podwarpProgram());
