// Reading kube-proxy's sessionAffinity memory (src/sources/kube-proxy-affinity.ts):
// the frontends with affinity and their endpoints' lists, in rule order, from
// iptables-save (kube-proxy's KUBE-SVC/KUBE-SEP layout and the sandbox's
// kube-proxy-style rules) and from `nft -j list table ip kube-proxy`; the
// ages in xt_recent lists (jiffies) and nft sets (seconds left).
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PROTO } from '../../abi/schema.js';
import {
  jiffiesClock,
  parseIptablesAffinity,
  parseNftAffinity,
  parseXtRecent,
  rememberedBy,
  type AffinityState,
} from '../../src/sources/kube-proxy-affinity.js';

// the layout kube-proxy 1.36's iptables proxier writes for a ClusterIP with
// sessionAffinity ClientIP (2 endpoints) and an externalIP of the same Service
const KUBE_PROXY_SAVE = `*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-ABCDEFGHIJKLMNOP - [0:0]
:KUBE-EXT-ABCDEFGHIJKLMNOP - [0:0]
:KUBE-SEP-AAAAAAAAAAAAAAAA - [0:0]
:KUBE-SEP-BBBBBBBBBBBBBBBB - [0:0]
:KUBE-SVC-PLAINPLAINPLAIN0 - [0:0]
:KUBE-SEP-CCCCCCCCCCCCCCCC - [0:0]
-A KUBE-SERVICES -d 10.96.0.40/32 -p tcp -m comment --comment "ns/web:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-ABCDEFGHIJKLMNOP
-A KUBE-SERVICES -d 192.0.2.10/32 -p tcp -m comment --comment "ns/web:http external IP" -m tcp --dport 80 -j KUBE-EXT-ABCDEFGHIJKLMNOP
-A KUBE-SERVICES -d 10.96.0.50/32 -p tcp -m comment --comment "ns/plain:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-PLAINPLAINPLAIN0
-A KUBE-EXT-ABCDEFGHIJKLMNOP -m comment --comment "masquerade traffic for ns/web:http external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-ABCDEFGHIJKLMNOP -j KUBE-SVC-ABCDEFGHIJKLMNOP
-A KUBE-SVC-ABCDEFGHIJKLMNOP ! -s 10.244.0.0/16 -d 10.96.0.40/32 -p tcp -m comment --comment "ns/web:http cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-ABCDEFGHIJKLMNOP -m comment --comment "ns/web:http -> 10.244.1.5:8080" -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-AAAAAAAAAAAAAAAA --mask 255.255.255.255 --rsource -j KUBE-SEP-AAAAAAAAAAAAAAAA
-A KUBE-SVC-ABCDEFGHIJKLMNOP -m comment --comment "ns/web:http -> 10.244.1.6:8080" -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-BBBBBBBBBBBBBBBB --mask 255.255.255.255 --rsource -j KUBE-SEP-BBBBBBBBBBBBBBBB
-A KUBE-SVC-ABCDEFGHIJKLMNOP -m comment --comment "ns/web:http -> 10.244.1.5:8080" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-AAAAAAAAAAAAAAAA
-A KUBE-SVC-ABCDEFGHIJKLMNOP -m comment --comment "ns/web:http -> 10.244.1.6:8080" -j KUBE-SEP-BBBBBBBBBBBBBBBB
-A KUBE-SEP-AAAAAAAAAAAAAAAA -s 10.244.1.5/32 -m comment --comment "ns/web:http" -j KUBE-MARK-MASQ
-A KUBE-SEP-AAAAAAAAAAAAAAAA -p tcp -m comment --comment "ns/web:http" -m recent --set --name KUBE-SEP-AAAAAAAAAAAAAAAA --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.244.1.5:8080
-A KUBE-SEP-BBBBBBBBBBBBBBBB -s 10.244.1.6/32 -m comment --comment "ns/web:http" -j KUBE-MARK-MASQ
-A KUBE-SEP-BBBBBBBBBBBBBBBB -p tcp -m comment --comment "ns/web:http" -m recent --set --name KUBE-SEP-BBBBBBBBBBBBBBBB --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.244.1.6:8080
-A KUBE-SVC-PLAINPLAINPLAIN0 -m comment --comment "ns/plain:http -> 10.244.1.7:80" -j KUBE-SEP-CCCCCCCCCCCCCCCC
-A KUBE-SEP-CCCCCCCCCCCCCCCC -p tcp -m tcp -j DNAT --to-destination 10.244.1.7:80
COMMIT
`;

const WEB_ENDPOINTS = [
  { list: 'KUBE-SEP-AAAAAAAAAAAAAAAA', backend: { ip: '10.244.1.5', port: 8080 } },
  { list: 'KUBE-SEP-BBBBBBBBBBBBBBBB', backend: { ip: '10.244.1.6', port: 8080 } },
];

describe('iptables: frontends with affinity from iptables-save', () => {
  it("kube-proxy's layout: the ClusterIP and the external IP (one jump further) with their endpoints' lists in rule order; a Service without affinity is not one", () => {
    const f = parseIptablesAffinity(KUBE_PROXY_SAVE);
    expect([...f.keys()].sort()).toEqual(['10.96.0.40:80/6', '192.0.2.10:80/6']);
    expect(f.get('10.96.0.40:80/6')).toEqual({ fe: { ip: '10.96.0.40', port: 80, proto: PROTO.TCP }, endpoints: WEB_ENDPOINTS });
    expect(f.get('192.0.2.10:80/6')!.endpoints).toEqual(WEB_ENDPOINTS);
  });

  it("the sandbox's kube-proxy-style rules (devtools/iptables.ts) as iptables-save prints them, UDP too", () => {
    const save = [
      '-A pwk1-SVC -d 10.96.7.1/32 -p udp -m udp --dport 53 -j pwk1-S0',
      '-A pwk1-S0 -m recent --rcheck --seconds 60 --reap --name pwk1-Eaaaa --mask 255.255.255.255 --rsource -j pwk1-Eaaaa',
      '-A pwk1-S0 -p udp -m statistic --mode random --probability 1.00000000000 -j pwk1-Eaaaa',
      '-A pwk1-Eaaaa -p udp -m recent --set --name pwk1-Eaaaa --mask 255.255.255.255 --rsource -j DNAT --to-destination 10.250.0.2:5353',
    ].join('\n');
    expect([...parseIptablesAffinity(save).values()]).toEqual([
      {
        fe: { ip: '10.96.7.1', port: 53, proto: PROTO.UDP },
        endpoints: [{ list: 'pwk1-Eaaaa', backend: { ip: '10.250.0.2', port: 5353 } }],
      },
    ]);
  });
});

describe('xt_recent lists and the jiffies clock', () => {
  it('HZ is the candidate that predicts jiffies from the monotonic clock (jiffies start 300 s before wrapping 32 bits)', () => {
    for (const hz of [100, 250, 300, 1000])
      for (const up of [3.2, 312.8, 86_400.5]) {
        const jiffies = 2n ** 32n - BigInt(300 * hz) + BigInt(Math.floor(up * hz));
        const text = `Timer List Version: v0.9\nnow at ${Math.round(up * 1e9)} nsecs\n\ncpu: 0\njiffies: ${jiffies}\n`;
        expect(jiffiesClock(text)).toEqual({ jiffies, hz });
      }
    expect(() => jiffiesClock('nothing here')).toThrow(/jiffies/);
  });

  it("a list's clients and the seconds since each was last seen", () => {
    const clock = { jiffies: 4_295_000_000n, hz: 250 };
    const text = [
      'src=10.244.9.1 ttl: 64 last_seen: 4294997500 oldest_pkt: 3 4294990000, 4294995000, 4294997500',
      'src=10.244.9.2 ttl: 63 last_seen: 4295000000 oldest_pkt: 1 4295000000',
      '',
    ].join('\n');
    expect(parseXtRecent(text, clock)).toEqual(
      new Map([
        ['10.244.9.1', 10],
        ['10.244.9.2', 0],
      ]),
    );
  });
});

describe('nftables: `nft -j list table ip kube-proxy`', () => {
  // kube-proxy's nftables layout (service-ips map → service chain with one `ip saddr @affinity-… goto endpoint-…`
  // per endpoint, then numgen; endpoint chains `update @affinity-… { ip saddr }` and dnat), loaded in a netns and
  // listed by nft 1.0.6: client 10.244.9.1 added with 2 h left, 10.244.9.2 with the set's 3 h
  const json = fs.readFileSync(path.join(import.meta.dirname, 'fixtures', 'kube-proxy-nft-affinity.json'), 'utf8');

  it('the frontend, its endpoints in rule order, and each set member with its age (timeout − expires)', () => {
    const { frontends, lists } = parseNftAffinity(json);
    const A = 'affinity-AAAA-ns/web/tcp/http__10.244.1.5/8080';
    const B = 'affinity-BBBB-ns/web/tcp/http__10.244.1.6/8080';
    expect([...frontends.values()]).toEqual([
      {
        fe: { ip: '10.96.0.40', port: 80, proto: PROTO.TCP },
        endpoints: [
          { list: A, backend: { ip: '10.244.1.5', port: 8080 } },
          { list: B, backend: { ip: '10.244.1.6', port: 8080 } },
        ],
      },
    ]);
    expect(lists.get(A)).toEqual(new Map([['10.244.9.1', 10800 - 7199]]));
    expect(lists.get(B)).toEqual(new Map([['10.244.9.2', 1]]));
  });

  it('no kube-proxy table content: nothing', () => {
    expect(parseNftAffinity('{"nftables": [{"metainfo": {}}]}').frontends.size).toBe(0);
  });
});

describe('which endpoint kube-proxy would send a client to', () => {
  const state: AffinityState = {
    mode: 'iptables',
    frontends: parseIptablesAffinity(KUBE_PROXY_SAVE),
    lists: new Map([
      ['KUBE-SEP-AAAAAAAAAAAAAAAA', new Map([['10.244.9.1', 20_000]])],
      [
        'KUBE-SEP-BBBBBBBBBBBBBBBB',
        new Map([
          ['10.244.9.1', 30],
          ['10.244.9.2', 5],
        ]),
      ],
    ]),
  };
  it('the first endpoint in rule order whose list holds the client within the timeout; none past it', () => {
    expect(rememberedBy(state, '10.96.0.40:80/6', '10.244.9.1', 10800)).toEqual({ backend: { ip: '10.244.1.6', port: 8080 }, ageS: 30 });
    expect(rememberedBy(state, '10.96.0.40:80/6', '10.244.9.1', 25_000)).toEqual({
      backend: { ip: '10.244.1.5', port: 8080 },
      ageS: 20_000,
    });
    expect(rememberedBy(state, '10.96.0.40:80/6', '10.244.9.2', 4)).toBeUndefined();
    expect(rememberedBy(state, '10.96.0.40:80/6', '10.244.9.3', 10800)).toBeUndefined();
    expect(rememberedBy(state, '10.96.0.50:80/6', '10.244.9.1', 10800)).toBeUndefined();
  });
});
