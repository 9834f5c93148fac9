// `npm run build:js`, last step: dist/build-info.json, the version and the commit of this build,
// which `podwarp version` reports when it runs from dist/ (the image has no .git). The commit is
// $PODWARP_COMMIT (the Dockerfile's build argument), else HEAD of the checkout this runs in, else null.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

const fromGit = () => {
  try {
    return execFileSync('git', ['rev-parse', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return '';
  }
};
const commit = process.env.PODWARP_COMMIT || (fs.existsSync('.git') ? fromGit() : '');
const version = JSON.parse(fs.readFileSync('package.json', 'utf8')).version;
fs.writeFileSync('dist/build-info.json', JSON.stringify({ version, commit: /^[0-9a-f]{40}$/.test(commit) ? commit : null }) + '\n');
