// SPDX-License-Identifier: Apache-2.0
/*
 * pw-trace-link PROG_PIN LINK_PIN — attach a pinned fentry/fexit program
 * (its target is fixed at load) and pin the resulting bpf_link, so the
 * attachment outlives this process; removing LINK_PIN detaches it.
 *
 * The one thing bpftool 7.1 (Debian bookworm) cannot do: it loads tracing
 * programs but has no attach for them (`prog load … autoattach` came later).
 * Raw syscalls only, no libbpf: BPF_OBJ_GET, BPF_RAW_TRACEPOINT_OPEN (with no
 * name: attach a tracing program to its BTF target, kernels ≥ 5.5; a
 * bpf_link since 5.7), BPF_OBJ_PIN. Built by `podwarp build` (loader/build.ts)
 * to build/bin/pw-trace-link; run by loader/datapath.ts.
 */
#include <errno.h>
#include <linux/bpf.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static int sys_bpf(int cmd, union bpf_attr *attr)
{
	return (int)syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

int main(int argc, char **argv)
{
	union bpf_attr attr;
	int prog, link;

	if (argc != 3) {
		fprintf(stderr, "usage: pw-trace-link PROG_PIN LINK_PIN\n");
		return 2;
	}
	memset(&attr, 0, sizeof(attr));
	attr.pathname = (uint64_t)(uintptr_t)argv[1];
	prog = sys_bpf(BPF_OBJ_GET, &attr);
	if (prog < 0) {
		fprintf(stderr, "pw-trace-link: open program %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	memset(&attr, 0, sizeof(attr));
	attr.raw_tracepoint.prog_fd = (uint32_t)prog;
	link = sys_bpf(BPF_RAW_TRACEPOINT_OPEN, &attr);
	if (link < 0) {
		fprintf(stderr, "pw-trace-link: attach %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	memset(&attr, 0, sizeof(attr));
	attr.pathname = (uint64_t)(uintptr_t)argv[2];
	attr.bpf_fd = (uint32_t)link;
	if (sys_bpf(BPF_OBJ_PIN, &attr) < 0) {
		fprintf(stderr, "pw-trace-link: pin link at %s: %s\n", argv[2], strerror(errno));
		return 1;
	}
	return 0;
}
