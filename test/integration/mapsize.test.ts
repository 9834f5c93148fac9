// The conntrack-sized maps (loader/mapsize.ts) as the loader applies them: a
// new pin of pw_revnat and pw_udp_flow gets nf_conntrack_max's size (the
// floor where nf_conntrack is not loaded), the programs share that map, a pin
// of an earlier load with another derived size is reused as it is, and only
// an explicit PODWARP_MAP_SIZES that differs from the pin is refused.
import crypto from 'node:crypto';
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { layoutOf, mapDef } from '../../abi/schema.js';
import * as bpftool from '../../loader/bpftool.js';
import { Datapath } from '../../loader/datapath.js';
import { CONNTRACK_SIZED, readConntrackMax, sizeFromConntrackMax } from '../../loader/mapsize.js';
import { build } from '../../loader/build.js';
import { AgentMetrics } from '../../src/metrics.js';
import { buildTestObjects } from '../bpf/logic.js';
import { kernelAllows, requireRoot } from './helpers.js';

const open: Datapath[] = [];
const fresh = async () => {
  const dp = await Datapath.open(`pwtest_size_${crypto.randomBytes(3).toString('hex')}`);
  open.push(dp);
  return dp;
};
/** A pin as an earlier load would have left it, with `entries`. */
async function pinEarlier(dp: Datapath, name: string, entries: number) {
  const m = mapDef(name);
  fs.mkdirSync(dp.pins.mapsDir, { recursive: true });
  await bpftool.mapCreate(dp.pins.map(name), { type: m.type, key: layoutOf(m.key).size, value: layoutOf(m.value).size, entries, name });
}
const maxEntries = async (dp: Datapath, name: string) => (await bpftool.mapShow(dp.pins.map(name))).max_entries;

describe('maps sized from nf_conntrack_max', () => {
  requireRoot();
  const want = sizeFromConntrackMax(readConntrackMax());
  const savedSizes = process.env.PODWARP_MAP_SIZES;

  afterEach(async () => {
    if (savedSizes === undefined) delete process.env.PODWARP_MAP_SIZES;
    else process.env.PODWARP_MAP_SIZES = savedSizes;
    for (const dp of open.splice(0)) await dp.uninstall();
  });

  it(`a new pin gets the node's size (here ${want.entries}, ${want.source}), and the programs use that map`, async () => {
    const dp = await fresh();
    await dp.load(await buildTestObjects(['sockops']));
    for (const name of CONNTRACK_SIZED) expect([name, await maxEntries(dp, name)]).toEqual([name, want.entries]);
    expect(dp.sizing.map((s) => [s.map, s.entries, s.source, s.pinned])).toEqual(
      CONNTRACK_SIZED.map((n) => [n, want.entries, want.source, undefined]),
    );
    // the test program's pw_revnat is the pinned one
    const progMaps = (await dp.maps.progInfo('test_sockops')).map_ids ?? [];
    expect(progMaps).toContain(await dp.maps.mapId('pw_revnat'));
  });

  it('a pin of an earlier load with another size is reused as it is (a changed sysctl never stops the agent)', async () => {
    const dp = await fresh();
    await pinEarlier(dp, 'pw_revnat', 70_000);
    const id = (await bpftool.mapShow(dp.pins.map('pw_revnat'))).id;
    await dp.load(await buildTestObjects(['sockops']));
    expect({ entries: await maxEntries(dp, 'pw_revnat'), id: await dp.maps.mapId('pw_revnat') }).toEqual({ entries: 70_000, id });
    expect(dp.sizing.find((s) => s.map === 'pw_revnat')).toMatchObject({ entries: want.entries, pinned: 70_000 });
    // a second load (an agent restart) keeps it too
    await dp.load(await buildTestObjects(['sockops']));
    expect(await maxEntries(dp, 'pw_revnat')).toBe(70_000);
  });

  it('podwarp_map_entries counts what an LRU map holds (counting iterator, or a bpftool dump kept a minute where the kernel refuses it); podwarp_map_max_entries is its size', async () => {
    // both worlds: a kernel that refuses bpf_map_elem iterators counts through bpftool, cached
    const iter = await kernelAllows('iter/pw_count_iter.o', 'map-dump');
    const dp = await fresh();
    const countIter = (await build()).filter((o) => o.endsWith('iter/pw_count_iter.o'));
    expect(countIter.length).toBe(1);
    await dp.load([...(await buildTestObjects(['sockops'])), ...countIter]);
    const revnat = (cookie: bigint) => ({ key: { cookie, ip: '10.244.1.9', port: 80 }, value: { ip: '10.96.0.10', port: 80 } });
    await dp.maps.write('pw_revnat', [1n, 2n, 3n].map(revnat), []);
    expect([dp.maps.countByIter('pw_revnat'), dp.maps.countByIter('pw_udp_flow')]).toEqual(iter.allowed ? [3, 0] : [undefined, undefined]);
    const metrics = new AgentMetrics(dp);
    let text = await metrics.registry.metrics();
    const gauge = (name: string, map: string) => Number(new RegExp(`^${name}\\{map="${map}"\\} (\\S+)$`, 'm').exec(text)?.[1]);
    expect({
      revnat: gauge('podwarp_map_entries', 'pw_revnat'),
      revnatMax: gauge('podwarp_map_max_entries', 'pw_revnat'),
      ct: gauge('podwarp_map_entries', 'pw_ct'),
      ctMax: gauge('podwarp_map_max_entries', 'pw_ct'),
    }).toEqual({ revnat: 3, revnatMax: want.entries, ct: 0, ctMax: mapDef('pw_ct').maxEntries });
    expect(text).not.toMatch(/podwarp_map_entries\{map="pw_svc"\}/); // hash maps the agent writes: not counted
    // the next scrape: the iterator reads afresh; bpftool's count is kept for MAP_FILL_FALLBACK_MS
    await dp.maps.write('pw_revnat', [revnat(4n)], []);
    text = await metrics.registry.metrics();
    expect(gauge('podwarp_map_entries', 'pw_revnat')).toBe(iter.allowed ? 4 : 3);
  });

  it('an explicit size that differs from the pin is refused, with the sizes and the fix', async () => {
    const dp = await fresh();
    await pinEarlier(dp, 'pw_udp_flow', 70_000);
    const objs = await buildTestObjects(['sockops']); // built before: the size is the check's, not the build's
    process.env.PODWARP_MAP_SIZES = 'pw_udp_flow=70001';
    await expect(dp.load(objs)).rejects.toThrow(
      /pinned map pw_udp_flow holds 70000 entries, this build 70001 \(PODWARP_MAP_SIZES\).*podwarp uninstall/,
    );
  });
});
