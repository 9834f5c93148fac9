// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pw_sk_msg without kernel reads: the program of bpf/pw_sk_msg.c with its
 * flow control built without bpf_probe_read_kernel, which a kernel in
 * lockdown=confidentiality (and some LSM policies) refuses. The loader
 * (loader/datapath.ts loadCore) loads it only when the kernel refuses
 * bpf/pw_sk_msg.o: socket acceleration stays on, and a peer's unread bytes
 * come from the fexit read counter where the kernel allows it, else every
 * redirected byte counts as unread (a flow moves to TCP after
 * PW_QUEUE_MAX_BYTES).
 */
#define PW_NO_KERNEL_READ 1
#include "../pw_sk_msg.c"
