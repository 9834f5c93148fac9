// The effective-query fallback of cgroupShow (kernels < 6.0): a cgroup's own
// programs are its effective list minus its parent's.
import { describe, expect, it } from 'vitest';
import { ownPrograms, type CgroupProg } from '../../loader/bpftool.js';

const p = (id: number, attach_type = 'cgroup_sock_ops', name = `p${id}`): CgroupProg => ({ id, attach_type, name });

describe('ownPrograms', () => {
  it('drops what the parent passes down and keeps the cgroup own programs', () => {
    expect(ownPrograms([p(1), p(7, 'cgroup_inet4_connect'), p(9, 'cgroup_device')], [p(9, 'cgroup_device')])).toEqual([
      p(1),
      p(7, 'cgroup_inet4_connect'),
    ]);
  });
  it('keeps one copy of a program attached both here and on the parent', () => {
    expect(ownPrograms([p(3), p(3)], [p(3)])).toEqual([p(3)]);
  });
  it('tells attach types apart for one program id', () => {
    expect(ownPrograms([p(4, 'cgroup_inet4_connect')], [p(4, 'cgroup_sock_ops')])).toEqual([p(4, 'cgroup_inet4_connect')]);
  });
  it('is the whole list when the parent has nothing', () => {
    expect(ownPrograms([p(1), p(2)], [])).toEqual([p(1), p(2)]);
  });
});
