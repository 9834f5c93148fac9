// The node-local half of the control loop's two ends: read the actual state
// back from the pinned maps and live attachments, and apply a plan to them.
import type { Datapath } from '../../loader/datapath.js';
import type { SockConfig } from './desired.js';
import type { ActualState, Plan } from './plan.js';

/** Slots of pw_config.excluded_ports (abi/schema.ts). */
const EXCLUDED_PORT_SLOTS = 8;

export async function readActual(dp: Datapath): Promise<ActualState> {
  const endpoints = new Map(
    (await dp.maps.dump('pw_endpoints')).map((e) => {
      const ip = String(e.key.ip);
      return [
        ip,
        { ip, ifindex: Number(e.value.ifindex), flags: Number(e.value.flags), mac: String(e.value.mac), gwMac: String(e.value.gw_mac) },
      ];
    }),
  );
  const cgroups = (await dp.cgroups.status()).map((c) => ({
    path: c.path,
    present: c.present,
    // what is really attached (a hook someone removed gets re-attached)
    hooks: c.liveHooks,
  }));
  return { endpoints, ifaces: await dp.tc.status(), cgroups, config: await readConfig(dp) };
}

/**
 * Order matters: a pod is only an endpoint of the socket fast path once its
 * map entry says so, and stops being one (its sockets drained out of pw_sock
 * with no byte lost) before its entry goes away.
 */
export async function applyPlan(dp: Datapath, p: Plan): Promise<void> {
  const stale = p.detach.filter((i) => !i.present);
  for (const i of stale) await dp.tc.detach(i);
  for (const a of p.attach) await dp.tc.attach(a.name);
  if (p.config) await writeConfig(dp, p.config);
  await dp.maps.write(
    'pw_endpoints',
    p.upsert.map((e) => ({ key: { ip: e.ip }, value: { ifindex: e.ifindex, flags: e.flags, mac: e.mac, gw_mac: e.gwMac } })),
    [],
  );
  for (const c of p.cgroups.filter((x) => x.hooks !== 0)) await dp.cgroups.set(c.path, c.hooks);
  for (const c of p.cgroups.filter((x) => x.hooks === 0)) await dp.cgroups.set(c.path, 0);
  if (p.drainIps.length) {
    const ips = new Set(p.drainIps);
    await dp.sockets.drain((k) => ips.has(String(k.sip)) || ips.has(String(k.dip)));
  }
  await dp.maps.write(
    'pw_endpoints',
    [],
    p.delete.map((ip) => ({ ip })),
  );
  for (const i of p.detach.filter((x) => x.present)) await dp.tc.detach(i);
}

/** pw_config as the agent last wrote it; undefined before the first write. */
export async function readConfig(dp: Datapath): Promise<SockConfig | undefined> {
  if (!dp.pins.hasMap('pw_config')) return undefined;
  const e = (await dp.maps.dump('pw_config'))[0];
  if (!e) return undefined;
  const v = e.value;
  return {
    flags: Number(v.flags),
    proxyUid: Number(v.proxy_uid),
    proxyPort: Number(v.proxy_port),
    bulkBytes: Number(v.bulk_bytes),
    excludedPorts: (v.excluded_ports as number[]).filter((x) => x !== 0),
    svcDropped: Number(v.svc_dropped),
  };
}

export async function writeConfig(dp: Datapath, c: SockConfig): Promise<void> {
  if (c.excludedPorts.length > EXCLUDED_PORT_SLOTS) throw new Error(`at most ${EXCLUDED_PORT_SLOTS} excluded ports`);
  const ports = [...c.excludedPorts, ...new Array<number>(EXCLUDED_PORT_SLOTS - c.excludedPorts.length).fill(0)];
  const value = {
    flags: c.flags,
    proxy_uid: c.proxyUid,
    proxy_port: c.proxyPort,
    bulk_bytes: c.bulkBytes,
    excluded_ports: ports,
    svc_dropped: c.svcDropped,
  };
  await dp.maps.write('pw_config', [{ key: { index: 0 }, value }], []);
}
