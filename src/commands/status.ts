// `podwarp status`: what is loaded, pinned and attached where.
import fs from 'node:fs';
import { partsOf, type Datapath } from '../../loader/datapath.js';
import { describeFlowControl, flowControlOf } from '../../loader/flowcontrol.js';
import { NOT_PINNED, describePart } from '../../loader/parts.js';
import { probe } from '../../loader/features.js';
import { asPinned, conntrackSizing, describeSizing, readConntrackMax } from '../../loader/mapsize.js';
import { mapSizes } from '../../loader/build.js';
import { CONFIG_FLAGS, MAPS, mapDef } from '../../abi/schema.js';
import { flagNames } from '../../abi/codec.js';
import { data, isData, table, type OutputFormat } from '../table.js';
import { describeHolder } from '../../host/lock.js';
import { readAgentReport } from '../agent-report.js';
import { readConfig } from '../pods/apply.js';
import { kernelStructHasMember } from '../../loader/kbtf.js';

export async function statusData(dp: Datapath) {
  const features = await probe();
  const loaded = fs.existsSync(dp.pinRoot);
  const maps: { name: string; pinned: boolean; id?: number; type?: string; entries?: number; maxEntries?: number }[] = [];
  for (const m of MAPS) {
    if (!fs.existsSync(dp.pins.map(m.name))) {
      maps.push({ name: m.name, pinned: false });
      continue;
    }
    const info = await dp.maps.show(m.name);
    const entries = await dp.maps.count(m.name);
    maps.push({ name: m.name, pinned: true, id: info.id, type: info.type, entries, maxEntries: info.max_entries });
  }
  // the conntrack-sized maps: the size this node asks for, and the pin's where an earlier load chose another
  const pinnedMax = (name: string) => maps.find((m) => m.name === name && m.pinned)?.maxEntries;
  const mapSizing = conntrackSizing(mapSizes(process.env.PODWARP_MAP_SIZES), readConntrackMax()).map((s) => asPinned(s, pinnedMax(s.map)));
  const progs = [];
  if (fs.existsSync(dp.pins.progsDir)) {
    for (const p of fs.readdirSync(dp.pins.progsDir).sort()) {
      const info = await dp.maps.progInfo(p);
      progs.push({ name: p, id: info.id, type: info.type, tag: info.tag });
    }
  }
  const attachments = loaded && fs.existsSync(dp.pins.map('pw_ifaces')) ? await dp.tc.status() : [];
  const cgroups = loaded ? (await dp.cgroups.status()).map((c) => ({ ...c, id: c.id.toString() })) : [];
  const config = loaded ? await readConfig(dp) : undefined;
  // per-namespace view: from the agent's report (the maps key endpoints by IP only); endpoints it
  // counted that are no longer in pw_endpoints would show as a mismatch
  const agent = readAgentReport();
  const cgroupListing = dp.cgroups.listingPath() ?? 'unused';
  const flowControl = flowControlOf(dp.pins, kernelStructHasMember('sk_psock', 'msg_tot_len'));
  // the agent's own record has the kernel's reasons; without a running agent, the pins say what is there
  const parts = agent?.running && agent.parts ? agent.parts : partsOf(dp.pins, kernelStructHasMember('sk_psock', 'msg_tot_len'));
  const testRefuse = process.env.PODWARP_TEST_REFUSE;
  const hint = loaded ? undefined : 'datapath not loaded: run `podwarp doctor` to check the prerequisites';
  // the node lock's holder: the one process that may write these pins now (read from /proc/locks, not taken)
  const writer = dp.writer();
  return {
    pinRoot: dp.pinRoot,
    loaded,
    hint,
    features,
    writer,
    maps,
    mapSizing,
    programs: progs,
    attachments,
    cgroups,
    cgroupListing,
    flowControl,
    parts,
    ...(testRefuse ? { testRefuse } : {}),
    config,
    agent,
  };
}

export async function status(dp: Datapath, fmt: OutputFormat): Promise<string> {
  const s = await statusData(dp);
  if (isData(fmt)) return data(s, fmt);
  const f = s.features;
  let out = `pins:     ${s.pinRoot} (${s.loaded ? 'loaded' : 'not loaded'})\n`;
  out += `writer:   ${s.writer.holder ? describeHolder(s.writer.holder) : 'none (nobody holds the node lock)'}${s.writer.waiters ? `; ${s.writer.waiters} waiting for it` : ''}\n`;
  out += `kernel:   ${f.kernel}; bpf_redirect_peer ${f.redirectPeer ? 'yes' : 'NO'}; tc attach via ${f.tcAttach} (cls_bpf)\n\n`;
  if (!s.loaded) return out + 'the datapath is not loaded: is the agent running? `podwarp doctor` checks what this node needs for it\n';
  out += table(
    ['MAP', 'ID', 'TYPE', 'ENTRIES', 'MAX'],
    s.maps.map((m) =>
      m.pinned ? [m.name, m.id ?? '', m.type ?? '', m.entries ?? '', m.maxEntries ?? ''] : [m.name, '-', 'not pinned', '', ''],
    ),
  );
  for (const z of s.mapSizing) out += `map size: ${describeSizing(z)}\n`;
  out +=
    '\n' +
    table(
      ['PROGRAM', 'ID', 'TYPE', 'TAG'],
      s.programs.map((p) => [p.name, p.id, p.type, p.tag]),
    );
  const flagsField = mapDef('pw_ifaces').value.fields.find((x) => x.name === 'flags')!;
  const hooksField = mapDef('pw_cgroups').value.fields.find((x) => x.name === 'hooks')!;
  out +=
    '\n' +
    table(
      ['INTERFACE', 'IFINDEX', 'HOOK', 'STATE', 'PROG-ID', 'LEDGER'],
      s.attachments.map((a) => [
        a.name,
        a.ifindex,
        'tc ingress (clsact)',
        !a.present ? 'device gone' : a.attached ? 'attached' : 'FILTER MISSING',
        a.progId ?? '-',
        flagNames(flagsField, a.flags),
      ]),
    );
  out += `${s.attachments.length} tc attachments\n`;
  out +=
    '\n' +
    table(
      ['POD CGROUP', 'HOOKS (ledger)', 'ATTACHED NOW'],
      s.cgroups.map((c) => [c.path, flagNames(hooksField, c.hooks), c.present ? c.attached.join(',') || '-' : 'cgroup gone']),
    );
  out += `${s.cgroups.length} cgroup attachments; sk_msg on pw_sock; socket acceleration ${s.config && s.config.flags & CONFIG_FLAGS.SOCKMAP_ON ? 'on' : 'off'}\n`;
  out += `cgroup listing: ${s.cgroupListing === 'effective' ? 'bpftool cgroup show … effective minus the parent (the kernel rejects the attach-flags query, < 6.0)' : s.cgroupListing === 'query' ? 'bpftool cgroup show' : 'not needed yet'}\n`;
  out += `flow control: ${describeFlowControl(s.flowControl)}\n`;
  out +=
    '\n' +
    table(
      ['PART', 'STATE', 'WHAT PODWARP DOES'],
      s.parts.map((p) => [
        p.part,
        p.state === 'refused' ? (p.reason === NOT_PINNED ? 'off' : `off: ${p.reason ?? 'refused'}`) : p.state,
        p.effect,
      ]),
    );
  for (const p of s.parts.filter((x) => x.state === 'refused')) out += `warning: ${describePart(p)}\n`;
  if (s.testRefuse) out += `PODWARP_TEST_REFUSE=${s.testRefuse}: parts refused on purpose (a test switch)\n`;
  const a = s.agent;
  if (a) {
    const rows = Object.entries(a.namespaces).sort(([x], [y]) => x.localeCompare(y));
    out += `\nagent:    ${a.running ? 'running' : 'NOT RUNNING'} (pid ${a.pid}, ${a.source} source${a.node ? `, node ${a.node}` : ''}), last pass ${a.updated}\n`;
    out += `enabled namespaces: ${
      rows
        .filter(([, n]) => n.accelerate)
        .map(([ns]) => ns)
        .join(', ') || 'none'
    }\n`;
    out += table(
      ['NAMESPACE', 'ACCELERATE', 'ENABLED', 'DISABLED', 'SKIPPED'],
      rows.map(([ns, n]) => [ns, n.accelerate ? 'yes' : 'no', n.enabled, n.disabled, n.skipped]),
    );
    const k = a.services.kinds;
    const byKind = k ? ` (${k.cluster ?? 0} ClusterIP, ${k.external_ip ?? 0} external IP, ${k.lb_ingress ?? 0} LoadBalancer ingress)` : '';
    out += `${a.services.frontends} service frontends in pw_svc${byKind}${a.services.dropped ? `, ${a.services.dropped} left out` : ''}\n`;
    const reasons = new Map<string, number>();
    for (const n of Object.values(a.notAccelerated ?? {})) reasons.set(n.reason, (reasons.get(n.reason) ?? 0) + 1);
    if (reasons.size)
      out += `not accelerated (pods by reason): ${[...reasons]
        .sort(([x], [y]) => x.localeCompare(y))
        .map(([r, n]) => `${r} ${n}`)
        .join(', ')}\n`;
    if (a.policyGaps?.length)
      out += `WARNING: policy APIs not readable (${a.policyGaps.join(', ')}): no pod is accelerated until they answer\n`;
    const kp = a.kubeProxy;
    if (kp) {
      const from = { flag: '--masquerade-all', configz: "kube-proxy's /configz", state: 'the state file', unknown: 'unknown' }[kp.from];
      out +=
        kp.from === 'unknown'
          ? `kube-proxy: masqueradeAll taken as off (cannot read it: ${kp.error ?? 'no answer'}; --masquerade-all true|false says it)\n`
          : `kube-proxy: masqueradeAll ${kp.masqueradeAll ? 'on: every Service is left to kube-proxy' : 'off'} (from ${from}${kp.mode ? `, mode ${kp.mode}` : ''})\n`;
    }
    const left = Object.entries(a.services.leftCounts ?? {}).filter(([, n]) => n > 0);
    if (left.length) out += `left to kube-proxy: ${left.map(([why, n]) => `${n} ${why}`).join(', ')} (podwarp dump services)\n`;
  } else out += '\nagent:    no report (no agent has run here, or its run directory differs: PODWARP_RUN_DIR)\n';
  if (s.config?.svcDropped)
    out += `WARNING: ${s.config.svcDropped} services left to kube-proxy: pw_svc/pw_backends are full (PODWARP_MAP_SIZES)\n`;
  return out;
}
