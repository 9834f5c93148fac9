import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { normalizeUid, podCgroupIndex, podDirUid, podPids, scanPodCgroups } from '../../src/facts/cgroups.js';

const U1 = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0';
const U2 = '11111111-2222-3333-4444-555555555555';
const U3 = 'abcdefab-cdef-abcd-efab-cdefabcdefab';
const us = (u: string) => u.replace(/-/g, '_');

let root: string;
/** Makes cgroup-like dirs (with an empty cgroup.procs each) below the fake mount. */
function mk(...rels: string[]): void {
  for (const rel of rels) {
    const abs = path.join(root, rel);
    fs.mkdirSync(abs, { recursive: true });
    fs.writeFileSync(path.join(abs, 'cgroup.procs'), '');
  }
}
const procs = (rel: string, pids: number[]) => fs.writeFileSync(path.join(root, rel, 'cgroup.procs'), pids.map((p) => `${p}\n`).join(''));

beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'pw-cgroups-'));
});
afterEach(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

describe('normalizeUid', () => {
  it('gives the dashed lowercase form for dashed, underscored or uppercase UIDs', () => {
    expect(normalizeUid(U1)).toBe(U1);
    expect(normalizeUid(us(U1))).toBe(U1);
    expect(normalizeUid(U3.toUpperCase())).toBe(U3);
    expect(normalizeUid(us(U3).toUpperCase())).toBe(U3);
  });
  it('keeps a static pod hash UID (32 hex) and refuses anything else', () => {
    expect(normalizeUid('6E6C04F2B8E7D5F1C0A2F5B1F3B0C2D1')).toBe('6e6c04f2b8e7d5f1c0a2f5b1f3b0c2d1');
    expect(normalizeUid('not-a-uid')).toBeUndefined();
    expect(normalizeUid(U1 + '0')).toBeUndefined();
    expect(normalizeUid('0f1e2d3c4b5a69788796a5b4c3d2e1f')).toBeUndefined();
  });
});

describe('podDirUid', () => {
  it('wants the kubelet parent for each driver', () => {
    expect(podDirUid('kubepods', '', `pod${U1}`)).toBe(U1);
    expect(podDirUid('burstable', 'kubepods', `pod${U1}`)).toBe(U1);
    expect(podDirUid('burstable', 'other', `pod${U1}`)).toBeUndefined();
    expect(podDirUid('other', '', `pod${U1}`)).toBeUndefined();
    expect(podDirUid('kubepods', '', `pod${us(U1)}`)).toBeUndefined(); // underscores are systemd's, not cgroupfs
    expect(podDirUid('kubepods-burstable.slice', 'kubepods.slice', `kubepods-burstable-pod${us(U1)}.slice`)).toBe(U1);
    expect(podDirUid('kubepods.slice', '', `kubepods-burstable-pod${us(U1)}.slice`)).toBeUndefined(); // wrong parent slice
    expect(podDirUid('kubepods-burstable.slice', '', `kubepods-burstable-pod${U1}.slice`)).toBeUndefined(); // '-' is systemd's separator
    expect(podDirUid('kubelet-kubepods.slice', '', `kubelet-kubepods-pod${us(U1)}.slice`)).toBe(U1);
  });
});

describe('podCgroupIndex', () => {
  it('finds cgroupfs-driver pods (guaranteed, burstable, besteffort)', () => {
    mk(`/kubepods/pod${U1}/aaaa`, `/kubepods/burstable/pod${U2}/bbbb`, `/kubepods/besteffort/pod${U3}`);
    expect(Object.fromEntries(podCgroupIndex(root))).toEqual({
      [U1]: `/kubepods/pod${U1}`,
      [U2]: `/kubepods/burstable/pod${U2}`,
      [U3]: `/kubepods/besteffort/pod${U3}`,
    });
  });

  it('finds systemd-driver pods, UIDs back in dashed form', () => {
    mk(
      `/kubepods.slice/kubepods-pod${us(U1)}.slice/cri-containerd-1234.scope`,
      `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${us(U2)}.slice`,
      `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${us(U3)}.slice`,
    );
    expect(Object.fromEntries(podCgroupIndex(root))).toEqual({
      [U1]: `/kubepods.slice/kubepods-pod${us(U1)}.slice`,
      [U2]: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${us(U2)}.slice`,
      [U3]: `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${us(U3)}.slice`,
    });
  });

  it('finds pods nested below a prefix (kind nodes, both drivers)', () => {
    mk(
      `/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod${us(U1)}.slice/cri-containerd-ab.scope`,
      `/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod${us(U2)}.slice`,
      `/system.slice/docker-0123.scope/kubelet/kubepods/burstable/pod${U3}/c1`,
    );
    expect(Object.fromEntries(podCgroupIndex(root))).toEqual({
      [U1]: `/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod${us(U1)}.slice`,
      [U2]: `/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod${us(U2)}.slice`,
      [U3]: `/system.slice/docker-0123.scope/kubelet/kubepods/burstable/pod${U3}`,
    });
  });

  it('normalises uppercase UIDs in directory names', () => {
    mk(`/kubepods/pod${U3.toUpperCase()}`, `/kubepods.slice/kubepods-pod${us(U1).toUpperCase()}.slice`);
    expect([...podCgroupIndex(root).keys()].sort()).toEqual([U1, U3]);
  });

  it('ignores non-pod directories and never looks for pods inside a pod', () => {
    mk(
      '/system.slice/sshd.service',
      '/user.slice/user-0.slice',
      `/other/pod${U1}`, // a pod-like name outside kubepods
      `/kubepods/burstable/notapod`,
      `/kubepods/burstable/pod-${U1}`, // not the kubelet's spelling
      `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${U1}.slice`, // dashes in a unit name
      `/kubepods.slice/kubepods-besteffort.slice/kubepods-burstable-pod${us(U1)}.slice`, // wrong class slice
      `/kubepods/pod${U2}/kubepods/pod${U3}`, // inside a pod: not a pod
    );
    expect(Object.fromEntries(podCgroupIndex(root))).toEqual({ [U2]: `/kubepods/pod${U2}` });
  });

  it('stops at maxDepth', () => {
    mk(`/a/b/c/kubepods/pod${U1}`);
    expect(podCgroupIndex(root, { maxDepth: 5 }).get(U1)).toBe(`/a/b/c/kubepods/pod${U1}`);
    expect(podCgroupIndex(root, { maxDepth: 4 }).size).toBe(0);
    expect(podCgroupIndex(root).size).toBe(1); // default 8
  });

  it('leaves out a UID found twice (ambiguous: never guessed) and says where', () => {
    mk(`/kubepods/pod${U1}`, `/kubelet/kubepods/pod${U1}`, `/kubepods/pod${U2}`);
    const s = scanPodCgroups(root);
    expect([...s.pods.keys()]).toEqual([U2]);
    expect(s.duplicates.get(U1)).toEqual([`/kubelet/kubepods/pod${U1}`, `/kubepods/pod${U1}`]);
  });

  it('bounds the number of directories read', () => {
    mk('/a', '/b', '/c', `/kubepods/pod${U1}`);
    expect(scanPodCgroups(root, { maxDirs: 2 }).truncated).toBe(true);
    expect(scanPodCgroups(root).truncated).toBe(false);
  });

  it('tolerates a missing tree and directories vanishing during the walk', () => {
    expect(podCgroupIndex(path.join(root, 'nope')).size).toBe(0);
    mk(`/kubepods/pod${U1}`, '/gone/x/y');
    // remove a directory as soon as the walk lists its parent: readdir of it then fails with ENOENT
    const real = fs.readdirSync;
    let removed = false;
    const spy = ((p: fs.PathLike, o?: unknown) => {
      const r = (real as (p: fs.PathLike, o?: unknown) => unknown)(p, o);
      if (!removed && String(p) === root) {
        fs.rmSync(path.join(root, 'gone'), { recursive: true });
        removed = true;
      }
      return r;
    }) as typeof fs.readdirSync;
    fs.readdirSync = spy;
    try {
      expect(Object.fromEntries(podCgroupIndex(root))).toEqual({ [U1]: `/kubepods/pod${U1}` });
    } finally {
      fs.readdirSync = real;
    }
    expect(removed).toBe(true);
  });
});

describe('podPids', () => {
  it('reads the pod cgroup and its descendants, shallowest first, at most max', () => {
    const pod = `/kubepods/burstable/pod${U1}`;
    mk(`${pod}/c1`, `${pod}/c2/inner`);
    procs(pod, [10]);
    procs(`${pod}/c1`, [11, 12]);
    procs(`${pod}/c2/inner`, [13]);
    expect(podPids(root, pod).sort()).toEqual([10, 11, 12, 13]);
    expect(podPids(root, pod)[0]).toBe(10);
    expect(podPids(root, pod, 2)).toHaveLength(2);
  });
  it('gives nothing for an empty or vanished cgroup, refuses a path outside the mount', () => {
    mk(`/kubepods/pod${U1}`);
    expect(podPids(root, `/kubepods/pod${U1}`)).toEqual([]);
    expect(podPids(root, `/kubepods/pod${U2}`)).toEqual([]);
    expect(() => podPids(root, '/../etc')).toThrow(/not below/);
    expect(() => podPids(root, '/')).toThrow(/not below/);
  });
});
