// The layer rule (docs/architecture.md "Layers", CONTRIBUTING.md), checked by `npm run layers`:
//   abi/ ← host/ ← loader/ ← src/ ← devtools/   (and test/ may import anything)
// abi imports nothing of ours; host only abi; loader only abi and host; src
// only abi, host and loader, and of them only the facades (no bpftool, no
// exec); nothing of the product imports devtools or test; no cycles anywhere.
module.exports = {
  forbidden: [
    { name: 'no-cycles', severity: 'error', comment: 'imports form no cycle', from: {}, to: { circular: true } },
    {
      name: 'abi-is-the-bottom',
      severity: 'error',
      comment: 'abi/ (schema, codecs, C generation) imports nothing of podwarp',
      from: { path: '^abi/' },
      to: { path: '^(host|loader|src|devtools|test)/' },
    },
    {
      name: 'host-below-loader',
      severity: 'error',
      comment: 'host/ (processes, ip, tc, mounts, cgroups, the node lock, logging) imports only abi/',
      from: { path: '^host/' },
      to: { path: '^(loader|src|devtools|test)/' },
    },
    {
      name: 'loader-below-src',
      severity: 'error',
      comment: 'loader/ (kernel objects) imports only abi/ and host/',
      from: { path: '^loader/' },
      to: { path: '^(src|devtools|test)/' },
    },
    {
      name: 'product-without-devtools',
      severity: 'error',
      comment: 'src/ (the product) never imports devtools/ or test/',
      from: { path: '^src/' },
      to: { path: '^(devtools|test)/' },
    },
    {
      name: 'src-through-the-facades',
      severity: 'error',
      comment:
        "src/ reaches the kernel only through loader's facades (Datapath, Maps, TcAttachments, CgroupAttachments, SocketDrain) and host's tool wrappers: never bpftool or a raw command",
      from: { path: '^src/' },
      to: { path: '^(loader/bpftool|host/exec)\\.ts$' },
    },
    {
      name: 'devtools-without-tests',
      severity: 'error',
      comment: 'devtools/ never imports test/',
      from: { path: '^devtools/' },
      to: { path: '^test/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|build|node_modules)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js', '.json'] },
  },
};
