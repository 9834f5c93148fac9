// Which external tools the node has, and their versions (`podwarp doctor`).
import { run, which } from './exec.js';

/** The first line of a tool's version output; undefined when it is not on PATH. */
export async function toolVersion(tool: string): Promise<string | undefined> {
  const bin = await which(tool);
  if (!bin) return undefined;
  const arg = tool === 'tc' || tool === 'ip' ? '-V' : tool === 'bpftool' ? 'version' : '--version';
  const r = await run(`${tool} version`, [tool, arg], { reject: false });
  return (r.stdout.split('\n')[0] || r.stderr.split('\n')[0] || 'present').trim();
}

/** Whether a command is on PATH. */
export async function onPath(cmd: string): Promise<boolean> {
  return !!(await which(cmd));
}
