// The CLI against a live datapath, and `podwarp uninstall` removing exactly
// what podwarp created (another tool's qdisc and filter stay).
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as bpftool from '../../loader/bpftool.js';
import { run } from '../../host/exec.js';
import * as tc from '../../host/tc.js';
import { cgroupPath } from '../../host/cgroup.js';
import { kernelStructHasMember } from '../../loader/kbtf.js';
import { READ_PROG } from '../../loader/pins.js';
import { TC_HANDLE, TC_PRIO } from '../../loader/tcattach.js';
import { ROOT } from '../../loader/build.js';
import { loadStateFile } from '../../src/state/load.js';
import { reconcile } from '../../src/reconciler.js';
import { LB_PROGS, leftovers, setUp, tearDown, type Env } from './helpers.js';
import { mapRows } from '../../src/commands/dump.js';
import { IFACE_FLAGS, MAPS } from '../../abi/schema.js';

const CLI = path.join(ROOT, 'bin', 'podwarp');

describe('CLI and uninstall', () => {
  let env: Env | undefined;
  const cli = (...args: string[]) =>
    run('podwarp', [CLI, ...args], { reject: false, env: { ...process.env, PODWARP_PIN_NAME: env!.pinName } as Record<string, string> });

  beforeAll(async () => {
    env = await setUp({ pods: 4 });
    // "another tool" owns the clsact qdisc and a filter on pod-2's veth before podwarp arrives
    const foreign = env.m.pods[2]!.hostInterface;
    await run('tc', ['tc', 'qdisc', 'add', 'dev', foreign, 'clsact']);
    // a classic-BPF filter that matches nothing ("ret 0")
    await run('tc', ['tc', 'filter', 'add', 'dev', foreign, 'egress', 'prio', '7', 'protocol', 'all', 'bpf', 'bytecode', '1,6 0 0 0,']);
    const snap = loadStateFile(env.m.stateFile).snapshot;
    snap.namespaces.forEach((n) => (n.accelerate = n.name === 'team-b'));
    await reconcile(env.dp, snap);
  });

  afterAll(async () => {
    expect(await tearDown(env)).toEqual([]);
  });

  it('dump endpoints -o json shows every pod with its flags', async () => {
    const r = await cli('dump', 'endpoints', '-o', 'json');
    expect(r.exitCode).toBe(0);
    const rows = JSON.parse(r.stdout) as { ip: string; iface: string; flags: string }[];
    expect(rows.map((x) => [x.ip, x.iface, x.flags])).toEqual(
      env!.m.pods.map((p) => [p.ip, p.hostInterface, p.namespace === 'team-b' ? 'enabled' : '-']),
    );
  });

  it('dump endpoints and stats print tables', async () => {
    const e = await cli('dump', 'endpoints');
    expect(e.stdout).toMatch(/^IP\s+IFINDEX\s+HOST-IFACE\s+FLAGS\s+POD-MAC\s+GW-MAC/);
    expect(e.stdout).toContain(`${env!.m.pods.length} endpoints`);
    const s = await cli('dump', 'stats', '-o', 'json');
    expect((JSON.parse(s.stdout) as { reason: string }[]).map((x) => x.reason)).toContain('redirected');
    // -o yaml is the same data as -o json; -o wide the table
    const y = await cli('dump', 'endpoints', '-o', 'yaml');
    expect([y.exitCode, YAML.parse(y.stdout)]).toEqual([0, JSON.parse((await cli('dump', 'endpoints', '-o', 'json')).stdout)]);
    expect((await cli('dump', 'endpoints', '-o', 'wide')).stdout).toMatch(/^IP\s+IFINDEX\s+HOST-IFACE/);
    expect((await cli('dump', 'stats', '-o', 'xml')).exitCode).toBe(2);
  });

  it('dump map decodes every map of the schema; dump flows prints the tracked flows', async () => {
    // every map decodes (the function behind the command; one CLI start per map is slow under TCG)
    for (const m of MAPS) expect([m.name, Array.isArray(await mapRows(env!.dp, m.name))]).toEqual([m.name, true]);
    const eps = JSON.parse((await cli('dump', 'map', 'pw_endpoints', '-o', 'json')).stdout) as { key: { ip: string } }[];
    expect(eps.map((e) => e.key.ip).sort()).toEqual(env!.m.pods.map((p) => p.ip).sort());
    const stats = await mapRows(env!.dp, 'pw_stats'); // per-CPU: summed
    expect(stats.some((r) => typeof r.value.packets === 'bigint' && (r.value.packets as bigint) > 0n)).toBe(true);
    const t = await cli('dump', 'map', 'pw_config');
    expect(t.stdout).toMatch(/^KEY\.INDEX\s+FLAGS\s+PROXY_UID/);
    expect(t.stdout).toContain('1 entries in pw_config (array, max 1)');
    const bad = await cli('dump', 'map', 'pw_nope');
    expect([bad.exitCode, bad.stderr]).toEqual([2, expect.stringContaining('unknown map "pw_nope"')]);
    const f = await cli('dump', 'flows');
    expect([f.exitCode, f.stdout]).toEqual([
      0,
      expect.stringMatching(/^PROTO\s+CLIENT\s+SERVER\s+STATE\s+IDLE\s+COUNTS[\s\S]*TCP, \d+ UDP flows\n$/),
    ]);
  });

  it('status -o json lists maps, the program and every attachment', async () => {
    const r = await cli('status', '-o', 'json');
    expect(r.exitCode).toBe(0);
    const s = JSON.parse(r.stdout) as {
      maps: { name: string; pinned: boolean; entries: number }[];
      programs: { name: string; id: number }[];
      attachments: { name: string; attached: boolean; flags: number; progId: number }[];
      flowControl: { source: string };
    };
    expect(s.maps.find((m) => m.name === 'pw_endpoints')).toMatchObject({ pinned: true, entries: 4 });
    // flow control: the psock's own count where the kernel keeps one (6.x with msg_tot_len),
    // else the fexit read counter (5.10, 6.1), which is one more program
    const psock = kernelStructHasMember('sk_psock', 'msg_tot_len');
    expect(s.flowControl.source).toBe(psock ? 'psock' : 'fexit');
    expect(s.programs.map((p) => p.name)).toEqual(
      [
        ...LB_PROGS,
        'pw_proxy_conn4',
        'pw_proxy_conn6',
        'pw_proxy_odst',
        'pw_proxy_peer4',
        'pw_proxy_peer6',
        ...(psock ? [] : [READ_PROG]),
        'pw_sk_msg',
        'pw_sockops',
        'pw_tc_egress',
      ].sort(),
    );
    expect(s.attachments.map((a) => a.name).sort()).toEqual(env!.m.pods.map((p) => p.hostInterface).sort());
    const tcId = s.programs.find((p) => p.name === 'pw_tc_egress')!.id;
    for (const a of s.attachments) {
      expect(a.attached).toBe(true);
      expect(a.progId).toBe(tcId);
      // podwarp records that it did not create the foreign qdisc
      expect(a.flags & IFACE_FLAGS.QDISC_OWNED).toBe(a.name === env!.m.pods[2]!.hostInterface ? 0 : IFACE_FLAGS.QDISC_OWNED);
    }
  });

  it("a cgroup's attaches and detaches go in one bpftool run, in order, stop at the first failure; a path with a space goes one by one", async () => {
    const parent = path.dirname(cgroupPath(env!.m.pods[0]!.cgroup));
    const dirs = [path.join(parent, `pwbatch-${env!.id}`), path.join(parent, `pw batch ${env!.id}`)];
    const names = async (d: string) => (await bpftool.cgroupShow(d)).map((p) => `${p.attach_type} ${p.name}`).sort();
    const conn = { hook: 'connect4', prog: 'pw_lb_conn4', shown: 'cgroup_inet4_connect pw_lb_conn4' } as const;
    const send = { hook: 'sendmsg4', prog: 'pw_lb_send4', shown: 'cgroup_udp4_sendmsg pw_lb_send4' } as const;
    try {
      for (const d of dirs) {
        fs.mkdirSync(d);
        await bpftool.cgroupApply(
          d,
          [conn, send].map((h) => ({ op: 'attach', hook: h.hook, progPin: env!.dp.pins.prog(h.prog) })),
        );
        expect(await names(d)).toEqual([conn.shown, send.shown].sort());
      }
      // the first line fails (no such program attached): the second never runs
      const sendId = await env!.dp.maps.progId(send.prog);
      await expect(
        bpftool.cgroupApply(dirs[0]!, [
          { op: 'detach', hook: 'connect4', progId: 0x7ffffff0 },
          { op: 'detach', hook: 'sendmsg4', progId: sendId },
        ]),
      ).rejects.toThrow(/detach connect4, detach sendmsg4 on .*pwbatch/);
      expect(await names(dirs[0]!)).toEqual([conn.shown, send.shown].sort());
      const connId = await env!.dp.maps.progId(conn.prog);
      for (const d of dirs) {
        await bpftool.cgroupApply(d, [
          { op: 'detach', hook: 'connect4', progId: connId },
          { op: 'detach', hook: 'sendmsg4', progId: sendId },
        ]);
        expect(await names(d)).toEqual([]);
      }
    } finally {
      for (const d of dirs) if (fs.existsSync(d)) fs.rmdirSync(d);
    }
  });

  it('uninstall removes filters, own qdiscs, pins and programs, keeps the foreign ones, and is idempotent', async () => {
    const progId = await env!.dp.maps.progId('pw_tc_egress');
    for (const p of ['pw_tc_egress', 'pw_sockops', 'pw_sk_msg']) env!.progIds.push(await env!.dp.maps.progId(p));
    const cgPaths = (await env!.dp.cgroups.list()).map((c) => c.path).sort();
    expect(cgPaths).toEqual(
      env!.m.pods
        .filter((p) => p.namespace === 'team-b')
        .map((p) => p.cgroup)
        .sort(),
    );
    // a filter podwarp attached but whose ledger entry was lost is swept too
    const lost = env!.m.pods[3]!;
    const idx = (await env!.dp.tc.list()).find((r) => r.name === lost.hostInterface)!.ifindex;
    await env!.dp.maps.write('pw_ifaces', [], [{ ifindex: idx }]);

    const r = await cli('uninstall');
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain(
      'detached 3 interfaces, swept 1 stray filters, detached 2 cgroups, moved 0 sockets to TCP, handed 0 affinity entries to kube-proxy, removed pins',
    );
    for (const p of env!.m.pods) expect(await bpftool.cgroupShow(cgroupPath(p.cgroup))).toEqual([]);
    expect(fs.existsSync(env!.dp.pinRoot)).toBe(false);
    for (const p of env!.m.pods) {
      const own = p !== env!.m.pods[2] && p !== lost;
      expect(await tc.hasClsact(p.hostInterface)).toBe(!own);
      if (await tc.hasClsact(p.hostInterface)) {
        expect(tc.findFilter(await tc.listFilters(p.hostInterface, 'ingress'), TC_PRIO, TC_HANDLE)).toBeUndefined();
      }
    }
    // the foreign tool's filter is untouched
    const eg = await tc.listFilters(env!.m.pods[2]!.hostInterface, 'egress');
    expect(eg.some((f) => f.kind === 'bpf' && f.pref === 7)).toBe(true);
    expect((await leftovers(env!)).filter((x) => x.startsWith('programs') || x.startsWith('pins'))).toEqual([]);
    expect(await bpftool.progAlive(progId)).toBe(false);

    const again = await cli('uninstall');
    expect(again.exitCode).toBe(0);
    expect(again.stdout).toContain(
      'detached 0 interfaces, swept 0 stray filters, detached 0 cgroups, moved 0 sockets to TCP, handed 0 affinity entries to kube-proxy, no pins',
    );
  });

  it('dump after uninstall fails (a runtime condition: exit 1) with one clear line', async () => {
    const r = await cli('dump', 'endpoints');
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/^podwarp: error: podwarp is not loaded: map pw_endpoints is not pinned at .*\n$/);
  });
});
