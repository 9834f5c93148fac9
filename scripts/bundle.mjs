// `npm run build:js`, second step: bundles the compiled CLI (dist/src/main.js,
// from tsc) and its dependencies into dist/bundle/, which bin/podwarp runs.
//
// Why: Node's ES module loader pays per file (resolve, read, link), and the
// CLI's module graph is ~360 files, ~1,000 with the Kubernetes client. Start-up
// measured on a Debian 6.12 kernel under qemu TCG (the kernel matrix):
// `podwarp --help` 28.4 s unbundled vs 11.5 s bundled; importing the
// Kubernetes source 37.7 s vs 6.3 s. Natively `--help` is 0.55 s vs 0.37 s.
//
// Code splitting keeps the dynamic imports lazy: the agent, the Kubernetes
// client (~5.7 MB of its 7 MB), the doctor and kube-admin are chunks loaded
// only by the commands that need them.
import { build } from 'esbuild';

await build({
  entryPoints: ['dist/src/main.js'],
  outdir: 'dist/bundle',
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  logLevel: 'warning',
  // CommonJS dependencies call require() for Node's built-ins; an ES module has none
  banner: { js: "import { createRequire as __pwRequire } from 'node:module'; const require = __pwRequire(import.meta.url);" },
});
