// The conntrack-sized maps' size from net.netfilter.nf_conntrack_max's text
// (loader/mapsize.ts): the sysctl's value between the floor and the ceiling,
// the floor without nf_conntrack, and an explicit size over both.
import { describe, expect, it } from 'vitest';
import { mapDef } from '../../abi/schema.js';
import {
  CONNTRACK_SIZED,
  CONNTRACK_SIZED_CEILING,
  CONNTRACK_SIZED_FLOOR,
  conntrackSizing,
  describeSizing,
  sizeFromConntrackMax,
} from '../../loader/mapsize.js';

describe('map sizes from nf_conntrack_max', () => {
  it('takes the sysctl as it reads (a trailing newline, spaces)', () => {
    expect(sizeFromConntrackMax('262144\n')).toEqual({ entries: 262144, source: 'nf_conntrack_max', detail: 'nf_conntrack_max 262144' });
    expect(sizeFromConntrackMax(' 1048576 ').entries).toBe(1048576);
    expect(CONNTRACK_SIZED_CEILING).toBe(1048576);
    expect(sizeFromConntrackMax(`${CONNTRACK_SIZED_FLOOR}`).entries).toBe(CONNTRACK_SIZED_FLOOR);
  });

  it('raises a smaller table to the floor (the schema default) and holds a larger one to the ceiling', () => {
    expect(sizeFromConntrackMax('16384\n')).toEqual({
      entries: CONNTRACK_SIZED_FLOOR,
      source: 'nf_conntrack_max',
      detail: `nf_conntrack_max 16384, raised to the floor ${CONNTRACK_SIZED_FLOOR}`,
    });
    expect(sizeFromConntrackMax('0').entries).toBe(CONNTRACK_SIZED_FLOOR);
    expect(sizeFromConntrackMax(`${CONNTRACK_SIZED_CEILING + 1}`).entries).toBe(CONNTRACK_SIZED_CEILING);
    expect(sizeFromConntrackMax('99999999999').detail).toMatch(/held to the ceiling 1048576$/);
    expect(mapDef('pw_revnat').maxEntries).toBe(CONNTRACK_SIZED_FLOOR);
    expect(mapDef('pw_udp_flow').maxEntries).toBe(CONNTRACK_SIZED_FLOOR);
  });

  it('falls back to the floor without the file (nf_conntrack not loaded) or with text that is no number', () => {
    expect(sizeFromConntrackMax(undefined)).toEqual({
      entries: CONNTRACK_SIZED_FLOOR,
      source: 'default',
      detail: 'nf_conntrack not loaded (no net.netfilter.nf_conntrack_max): the default',
    });
    for (const t of ['', '\n', '-5', '1e6', 'lots'])
      expect(sizeFromConntrackMax(t)).toMatchObject({ entries: CONNTRACK_SIZED_FLOOR, source: 'default' });
  });

  it('sizes pw_revnat and pw_udp_flow alike; an explicit size (PODWARP_MAP_SIZES) wins for its map alone', () => {
    expect(CONNTRACK_SIZED).toEqual(['pw_revnat', 'pw_udp_flow']);
    expect(conntrackSizing({}, '300000').map((s) => [s.map, s.entries, s.source])).toEqual([
      ['pw_revnat', 300000, 'nf_conntrack_max'],
      ['pw_udp_flow', 300000, 'nf_conntrack_max'],
    ]);
    expect(conntrackSizing({ pw_revnat: 1000, pw_svc: 5 }, undefined).map((s) => [s.map, s.entries, s.source])).toEqual([
      ['pw_revnat', 1000, 'explicit'],
      ['pw_udp_flow', CONNTRACK_SIZED_FLOOR, 'default'],
    ]);
  });

  it('says where a size came from, and that a pinned map keeps its own', () => {
    const [s] = conntrackSizing({}, '262144');
    expect(describeSizing(s!)).toBe('pw_revnat 262144 entries (nf_conntrack_max 262144)');
    expect(describeSizing({ ...s!, pinned: 65536 })).toBe(
      'pw_revnat 65536 entries (nf_conntrack_max 262144; pinned with 65536, kept until `podwarp uninstall`)',
    );
  });
});
