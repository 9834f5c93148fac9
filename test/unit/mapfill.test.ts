// The LRU maps' fill for podwarp_map_entries (src/metrics.ts MapFill): the
// counting iterator read on every scrape; without it a bpftool count, kept
// for MAP_FILL_FALLBACK_MS so that a scrape never dumps a large map each time.
import { describe, expect, it } from 'vitest';
import { MAPS } from '../../abi/schema.js';
import { COUNTED_MAPS } from '../../loader/maps.js';
import { MAP_FILL_FALLBACK_MS, MapFill } from '../../src/metrics.js';

function fakeMaps(opts: { iter: boolean; pinned?: string[] }) {
  const held = new Map<string, number>(COUNTED_MAPS.map((m) => [m, 10]));
  const calls = { dumps: 0 };
  const maps = {
    pins: { hasMap: (m: string) => (opts.pinned ?? COUNTED_MAPS).includes(m) },
    countByIter: (m: string) => (opts.iter ? held.get(m) : undefined),
    count: async (m: string) => {
      calls.dumps++;
      return held.get(m);
    },
    show: async (m: string) => ({ max_entries: MAPS.find((x) => x.name === m)!.maxEntries }),
  };
  return { maps: maps as unknown as ConstructorParameters<typeof MapFill>[0], held, calls };
}

describe('map fill (podwarp_map_entries, podwarp_map_max_entries)', () => {
  it('covers the LRU maps, the ones the kernel evicts from, and not the hash maps the agent writes', () => {
    expect(COUNTED_MAPS).toContain('pw_revnat');
    expect(COUNTED_MAPS).toContain('pw_udp_flow');
    expect(COUNTED_MAPS).toContain('pw_ct');
    expect(COUNTED_MAPS).not.toContain('pw_svc');
    expect(COUNTED_MAPS.every((m) => MAPS.find((x) => x.name === m)!.type === 'lru_hash')).toBe(true);
  });

  it('reads each counting iterator on every scrape, with no bpftool dump', async () => {
    const f = fakeMaps({ iter: true });
    const fill = new MapFill(f.maps, () => 0);
    expect((await fill.read()).find((r) => r.map === 'pw_revnat')).toEqual({ map: 'pw_revnat', entries: 10, maxEntries: 65536 });
    f.held.set('pw_revnat', 11);
    expect((await fill.read()).find((r) => r.map === 'pw_revnat')!.entries).toBe(11);
    expect(f.calls.dumps).toBe(0);
  });

  it('without the iterator, dumps each map at most once per MAP_FILL_FALLBACK_MS', async () => {
    let now = 1_000_000;
    const f = fakeMaps({ iter: false });
    const fill = new MapFill(f.maps, () => now);
    await fill.read();
    expect(f.calls.dumps).toBe(COUNTED_MAPS.length);
    f.held.set('pw_revnat', 12);
    now += MAP_FILL_FALLBACK_MS - 1;
    expect((await fill.read()).find((r) => r.map === 'pw_revnat')!.entries).toBe(10);
    expect(f.calls.dumps).toBe(COUNTED_MAPS.length);
    now += 1;
    expect((await fill.read()).find((r) => r.map === 'pw_revnat')!.entries).toBe(12);
    expect(f.calls.dumps).toBe(2 * COUNTED_MAPS.length);
  });

  it('leaves out a map that is not pinned', async () => {
    const f = fakeMaps({ iter: true, pinned: ['pw_revnat'] });
    expect((await new MapFill(f.maps).read()).map((r) => r.map)).toEqual(['pw_revnat']);
  });
});
