// The podwarp command line (product commands). Data goes to stdout, logs to
// stderr. src/main.ts runs it; devtools/cli.ts adds the demo and the sandbox.
import path from 'node:path';
import { Command } from 'commander';
import { Datapath } from '../loader/datapath.js';
import { InputError } from '../host/errors.js';
import { LockBusyError } from '../host/lock.js';
import { build } from '../loader/build.js';
import {
  dumpAffinity,
  dumpBackends,
  dumpEndpoints,
  dumpFlows,
  dumpMap,
  dumpServices,
  dumpSockets,
  dumpStats,
  dumpUdpFlows,
} from './commands/dump.js';
import { status } from './commands/status.js';
import { SHELLS, commandTree, completionScript, type Shell } from './completion.js';
import { MAPS } from '../abi/schema.js';
import { versionInfo, versionLine, versionText } from './version.js';
import { OUTPUT_FORMATS, OUTPUT_HELP, checkFormat, data, isData, type OutputFormat } from './table.js';
import { handBackAll } from './services/affinity-handover.js';
import { errorMessage } from '../host/errors.js';
import { LOG_FORMATS, LOG_LEVELS, configureLog, log, logFailure, type LogFormat } from '../host/log.js';
import { failureOf } from './cli-errors.js';
import { ACCELERATE_LABEL } from './model.js';
import { loadStateFile, writeStateFile } from './state/load.js';
import { DEFAULT_CONFIGZ } from './sources/kube-proxy-config.js';

export const out = (s: string): void => {
  process.stdout.write(s);
};

/** Completion: the words an option's value takes, by flag (other value-taking options complete files). */
export const COMPLETION_VALUES: Record<string, readonly string[]> = {
  '-o': OUTPUT_FORMATS,
  '--output': OUTPUT_FORMATS,
  '--log-format': LOG_FORMATS,
  '--log-level': LOG_LEVELS,
  '--source': ['local', 'kubernetes'],
  '--masquerade-all': ['auto', 'true', 'false'],
};
/** Completion: the words of a command's first argument, by command. */
export const COMPLETION_ARGS: Record<string, string[]> = {
  'dump map': MAPS.map((m) => m.name),
  completion: [...SHELLS],
};

/** The product CLI: build, agent, enable/disable, dump, status, uninstall. */
export function podwarpProgram(name = 'podwarp'): Command {
  const program = new Command(name)
    .description('eBPF-accelerated datapath manager for Kubernetes nodes')
    // errors are runCli's one line (and exit code), not commander's message and the whole help;
    // help of a command group given without its subcommand goes to stdout, as kubectl's
    .exitOverride()
    .configureOutput({ outputError: () => {}, writeErr: (s) => process.stdout.write(s) })
    .version(versionLine(versionInfo(), name), '--version', 'print the version and exit (podwarp version: in full)')
    .option(
      '--log-format <format>',
      'logs on stderr: json (one object per line), pretty (readable), auto (pretty on a terminal)',
      process.env.PODWARP_LOG_FORMAT ?? 'auto',
    )
    .option('--log-level <level>', LOG_LEVELS.join(' | '), process.env.PODWARP_LOG_LEVEL ?? 'info')
    .hook('preAction', (cmd) => {
      const o = cmd.opts<{ logFormat: string; logLevel: string }>();
      if (!(LOG_FORMATS as readonly string[]).includes(o.logFormat))
        throw new InputError(`--log-format: "${o.logFormat}" is not one of ${LOG_FORMATS.join(', ')}`);
      if (!(LOG_LEVELS as readonly string[]).includes(o.logLevel))
        throw new InputError(`--log-level: "${o.logLevel}" is not one of ${LOG_LEVELS.join(', ')}`);
      configureLog({ format: o.logFormat as LogFormat, level: o.logLevel });
    });

  program
    .command('build')
    .description('generate build/include/pw_maps.h from the layout schema and compile bpf/*.c')
    .option('--force', 'rebuild everything')
    .action(async (o: { force?: boolean }) => {
      for (const obj of await build({ force: o.force })) out(path.relative(process.cwd(), obj) + '\n');
    });

  program
    .command('agent')
    .description('load the datapath and keep its maps and attachments equal to the source')
    .option('--source <source>', 'local (a state file) | kubernetes (informers)', 'local')
    .option('--state <file>', 'local source: state file (YAML or JSON, see src/state/state.schema.json)')
    .option('--kubeconfig <file>', 'kubernetes source: kubeconfig (default: in-cluster, else $KUBECONFIG or ~/.kube/config)')
    .option('--node <name>', 'kubernetes source: this node (default: $NODE_NAME)')
    .option('--once', 'reconcile once and exit')
    .option('--resync <seconds>', 'node-local re-check interval', '10')
    .option('--full-resync <seconds>', 'kubernetes source: read the service maps back and re-plan every service this often', '300')
    .option('--sync-timeout <seconds>', 'kubernetes source: give up when the initial lists do not complete in time', '60')
    .option('--debounce <ms>', 'coalesce changes this long before applying them', '10')
    .option(
      '--attach-backoff <seconds>',
      "longest wait between two attempts to attach a failing pod's hooks (it stays on the normal path meanwhile)",
      '30',
    )
    .option('--no-sockmap', 'tc fast path only: no sockops/sk_msg socket acceleration')
    .option('--proxy-uid <uid>', 'sidecar proxy uid, never captured', '1337')
    .option('--proxy-gid <gid>', 'sidecar proxy gid, never captured', '1337')
    .option('--proxy-port <port>', 'sidecar outbound port', '15001')
    .option('--exclude-outbound-ports <list>', 'comma-separated destination ports never sent to the sidecar (≤ 8)', '')
    .option('--no-lb', 'no service load balancing at connect() (kube-proxy rules only)')
    .option('--metrics-addr <host:port>', '/metrics, /healthz, /readyz (empty: off)', '127.0.0.1:9464')
    .option(
      '--masquerade-all <auto|true|false>',
      "kube-proxy's masqueradeAll: every Service is left to kube-proxy when true; auto reads kube-proxy's /configz (kubernetes source) or the state file's kubeProxy.masqueradeAll",
      'auto',
    )
    .option('--kube-proxy-configz <url>', "kube-proxy's /configz, read by --masquerade-all auto", DEFAULT_CONFIGZ)
    .action(
      async (o: {
        source: string;
        state?: string;
        kubeconfig?: string;
        node?: string;
        once?: boolean;
        resync: string;
        fullResync: string;
        debounce: string;
        attachBackoff: string;
        syncTimeout: string;
        sockmap: boolean;
        lb: boolean;
        proxyUid: string;
        proxyGid: string;
        proxyPort: string;
        excludeOutboundPorts: string;
        metricsAddr: string;
        masqueradeAll: string;
        kubeProxyConfigz: string;
      }) => {
        const int = (v: string, what: string, max: number) => {
          const n = Number(v);
          if (!Number.isInteger(n) || n < 0 || n > max) throw new InputError(`${what}: "${v}" is not an integer in 0..${max}`);
          return n;
        };
        if (o.source !== 'local' && o.source !== 'kubernetes') throw new InputError(`--source: "${o.source}" is not local or kubernetes`);
        if (o.source === 'local' && !o.state) throw new InputError('the local source needs --state FILE (or use --source kubernetes)');
        if (o.source === 'kubernetes' && o.state)
          throw new InputError('--state is for the local source; the kubernetes source reads the API');
        const node = o.node ?? process.env.NODE_NAME;
        if (o.source === 'kubernetes' && !node)
          throw new InputError("the kubernetes source needs this node's name: --node NAME or NODE_NAME");
        const sockets = {
          sockmap: o.sockmap,
          lb: o.lb,
          proxyUid: int(o.proxyUid, '--proxy-uid', 2 ** 32 - 1),
          proxyGid: int(o.proxyGid, '--proxy-gid', 65535),
          proxyPort: int(o.proxyPort, '--proxy-port', 65535),
          excludedPorts: o.excludeOutboundPorts
            .split(',')
            .filter(Boolean)
            .map((p) => int(p, '--exclude-outbound-ports', 65535)),
        };
        if (sockets.excludedPorts.length > 8) throw new InputError('--exclude-outbound-ports: at most 8 ports');
        const masq = { auto: 'auto', true: true, false: false }[o.masqueradeAll] as 'auto' | boolean | undefined;
        if (masq === undefined) throw new InputError(`--masquerade-all: "${o.masqueradeAll}" is not auto, true or false`);
        if (!/^https?:\/\//.test(o.kubeProxyConfigz))
          throw new InputError(`--kube-proxy-configz: "${o.kubeProxyConfigz}" is not an http(s) URL`);
        // loaded on use: the Kubernetes client is a large module graph the other commands do not need
        const { runAgent } = await import('./agent.js');
        await runAgent({
          source: o.source,
          stateFile: o.state,
          kubeconfig: o.kubeconfig,
          node,
          once: o.once,
          resyncMs: int(o.resync, '--resync', 86400) * 1000,
          fullResyncMs: int(o.fullResync, '--full-resync', 86400 * 7) * 1000,
          debounceMs: int(o.debounce, '--debounce', 60000),
          attachBackoffMs: Math.max(1, int(o.attachBackoff, '--attach-backoff', 3600)) * 1000,
          syncTimeoutMs: int(o.syncTimeout, '--sync-timeout', 86400) * 1000,
          sockets,
          metricsAddr: o.once ? '' : o.metricsAddr,
          masqueradeAll: masq,
          kubeProxyConfigz: o.kubeProxyConfigz,
        });
      },
    );

  for (const [verb, on] of [
    ['enable', true],
    ['disable', false],
  ] as const) {
    program
      .command(verb)
      .description(
        `${verb} acceleration for a namespace: sets the podwarp.io/accelerate label through the API (or, with --state, edits the local state file); a running agent follows it`,
      )
      .argument('<namespace>')
      .option('--state <file>', 'local source: edit this state file instead of the cluster')
      .option('--kubeconfig <file>', 'default: $KUBECONFIG, ~/.kube/config, or in-cluster')
      .action(async (ns: string, o: { state?: string; kubeconfig?: string }) => {
        if (o.state) {
          const { state } = loadStateFile(o.state);
          const n = state.namespaces.find((x) => x.name === ns);
          if (!n)
            throw new InputError(
              `namespace "${ns}" is not in ${o.state} (known: ${state.namespaces.map((x) => x.name).join(', ') || 'none'})`,
            );
          const was = n.accelerate ?? false;
          n.accelerate = on;
          writeStateFile(o.state, state);
          out(`namespace ${ns}: acceleration ${on ? 'on' : 'off'}${was === on ? ' (unchanged)' : ''}\n`);
          return;
        }
        const { setNamespaceAcceleration } = await import('./sources/kube-admin.js');
        const r = await setNamespaceAcceleration(ns, on, o.kubeconfig);
        out(
          `namespace ${ns}: acceleration ${on ? 'on' : 'off'}${r.changed ? '' : ' (unchanged)'} (label ${ACCELERATE_LABEL}${on ? '=true' : ' removed'})\n`,
        );
      });
  }

  const dump = program.command('dump').description('decode a pinned map');
  const dumps: [string, string, (dp: Datapath, f: OutputFormat) => Promise<string>][] = [
    ['endpoints', 'pw_endpoints: local pods the tc program may redirect to', dumpEndpoints],
    ['sockets', 'pw_sock: accelerated TCP sockets, their flow state and unread redirected data', dumpSockets],
    ['services', 'pw_svc: service frontends, their backend count (slot 0) and each slot', dumpServices],
    [
      'affinity',
      'pw_affinity: sessionAffinity ClientIP, the backend each client pod last used per frontend, its age and state',
      dumpAffinity,
    ],
    [
      'udpflows',
      "pw_udp_flow: each unconnected UDP flow's backend (socket, Service address), idle time and whether its next datagram still goes there",
      dumpUdpFlows,
    ],
    ['backends', 'pw_backends: service backends by id', dumpBackends],
    ['stats', 'pw_stats: datapath counters by reason (summed over CPUs)', dumpStats],
    [
      'flows',
      'pw_ct and pw_udp_ct: TCP and UDP flows the tc program saw start directly between two pods (only those are redirected)',
      dumpFlows,
    ],
  ];
  for (const [name, description, render] of dumps)
    dump
      .command(name)
      .description(description)
      .option('-o, --output <format>', OUTPUT_HELP, 'table')
      .action(async (o: { output: string }) => out(await render(await Datapath.open(), checkFormat(o.output))));
  dump
    .command('map')
    .argument('<name>', 'a map of abi/schema.ts, e.g. pw_revnat, pw_config, pw_cgroups')
    .description('any pinned map, decoded with the schema (per-CPU maps summed)')
    .option('-o, --output <format>', OUTPUT_HELP, 'table')
    .action(async (name: string, o: { output: string }) => out(await dumpMap(await Datapath.open(), name, checkFormat(o.output))));

  program
    .command('status')
    .description('what is loaded, pinned and attached where')
    .option('-o, --output <format>', OUTPUT_HELP, 'table')
    .action(async (o: { output: string }) => out(await status(await Datapath.open(), checkFormat(o.output))));

  program
    .command('doctor')
    .description(
      "check this node's prerequisites (kernel, BTF, mounts, tools, program/map/attach types and helpers probed by the kernel); exit 1 if the agent cannot run",
    )
    .option('-o, --output <format>', OUTPUT_HELP, 'table')
    .action(async (o: { output: string }) => {
      const fmt = checkFormat(o.output);
      // the scratch load's progress lines would only interleave with the table: warnings and errors stay
      if (!process.env.PODWARP_LOG_LEVEL && program.getOptionValueSource('logLevel') === 'default') configureLog({ level: 'warn' });
      const { runDoctor } = await import('./commands/doctor.js');
      const r = await runDoctor(fmt);
      out(r.text);
      process.exitCode = r.code;
    });

  program
    .command('completion')
    .description('print a completion script: bash (source <(podwarp completion bash)), zsh, fish (podwarp completion fish | source)')
    .argument('<shell>', SHELLS.join(' | '))
    .action((shell: string) => {
      if (!(SHELLS as readonly string[]).includes(shell)) throw new InputError(`completion: "${shell}" is not one of ${SHELLS.join(', ')}`);
      out(completionScript(shell as Shell, commandTree(program, COMPLETION_ARGS), COMPLETION_VALUES));
    });

  program
    .command('version')
    .description('the version, the git commit it was built from (when known), Node and the oldest kernel it is built for')
    .option('-o, --output <format>', OUTPUT_HELP, 'table')
    .action((o: { output: string }) => {
      const fmt = checkFormat(o.output);
      const v = versionInfo();
      out(isData(fmt) ? data(v, fmt) : versionText(v));
    });

  program
    .command('uninstall')
    .description('remove every program, filter, qdisc, cgroup attachment and pin podwarp created (idempotent)')
    .option('--drain-timeout <seconds>', 'how long to wait for accelerated sockets to hand over their unread data', '10')
    .option('--force', 'remove sockets even if their unread redirected data would be lost')
    .option('--wait', 'if an agent (or another uninstall) holds the node lock, wait for it to exit instead of refusing')
    .action(async (o: { drainTimeout: string; force?: boolean; wait?: boolean }) => {
      const dp = await Datapath.open();
      // one writer per node: never under a running agent (it would rebuild what this removes)
      const lock = await dp
        .lock({
          wait: !!o.wait,
          onWait: (h) =>
            log.warn(
              { pinRoot: dp.pinRoot, holderPid: h?.pid, holder: h?.command },
              'another podwarp process writes this datapath: waiting for it to exit',
            ),
        })
        .catch((e: unknown) => {
          if (!(e instanceof LockBusyError)) throw e;
          throw new Error(
            `uninstall refused: ${e.message}. Stop it first (on a cluster: delete the DaemonSet, deploy/README.md), or pass --wait to wait until it exits`,
          );
        });
      // every pod goes back to kube-proxy's path: its sessionAffinity memory first (src/services/affinity-handover.ts)
      const handed = await handBackAll(dp).catch((e: unknown) => {
        log.warn({ err: errorMessage(e) }, 'sessionAffinity not handed back to kube-proxy: its clients choose anew');
        return 0;
      });
      const r = await dp.uninstall({ force: o.force, drainTimeoutMs: Number(o.drainTimeout) * 1000 }).finally(() => lock.release());
      out(
        `detached ${r.detached.length} interfaces, swept ${r.sweptFilters.length} stray filters, detached ${r.cgroupsDetached.length} cgroups, ` +
          `moved ${r.socketsRemoved} sockets to TCP, handed ${handed} affinity entries to kube-proxy, ${r.removedPins ? 'removed pins' : 'no pins'}\n`,
      );
    });

  return program;
}

/**
 * Parses argv and runs the command. A failure is one line on stderr, `NAME: error: MESSAGE`, or
 * with `--log-format json` (or PODWARP_LOG_FORMAT=json) one JSON line instead; the exit code is 1
 * for a runtime failure, 2 for usage or invalid input (src/cli-errors.ts).
 */
export async function runCli(program: Command, argv = process.argv): Promise<void> {
  try {
    await program.parseAsync(argv);
  } catch (e) {
    const f = failureOf(e);
    process.exitCode = f.code;
    if (f.code === 0) return;
    // the global options are parsed before a usage error in a subcommand is found
    const format = program.opts<{ logFormat?: string }>().logFormat;
    if (format === 'json') logFailure({ kind: f.kind, err: f.message, exitCode: f.code }, `${program.name()} failed`);
    else process.stderr.write(`${program.name()}: error: ${f.message}\n`);
  }
}
