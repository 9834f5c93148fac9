// The kubectl plugin (deploy/kubectl-podwarp) as tests run it: kubectl finds
// plugins on PATH by name, so a test puts deploy/ first on PATH and runs
// `kubectl podwarp …`; the plugin itself only runs `kubectl` ($KUBECTL).
// The real-cluster e2e: kubectlPodwarpArgv(['--node', NODE, 'dump', 'endpoints', '-o', 'json'])
// with pluginEnv({ KUBECONFIG }).
import path from 'node:path';
import { ROOT } from '../../loader/build.js';

export const KUBECTL_PLUGIN = path.join(ROOT, 'deploy', 'kubectl-podwarp');

/** `kubectl podwarp ARGS` (kubectl resolves the plugin from PATH, see pluginEnv). */
export function kubectlPodwarpArgv(args: string[]): string[] {
  return ['kubectl', 'podwarp', ...args];
}

/** The environment with deploy/ first on PATH, so `kubectl podwarp` is this checkout's plugin. */
export function pluginEnv(extra: Record<string, string> = {}, base: NodeJS.ProcessEnv = process.env): Record<string, string> {
  return { ...(base as Record<string, string>), PATH: `${path.dirname(KUBECTL_PLUGIN)}:${base.PATH ?? ''}`, ...extra };
}
