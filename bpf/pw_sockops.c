// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pw_sockops — put established TCP sockets of enabled pods into pw_sock.
 * Attached (multi) to each enabled pod's cgroup; logic in pw_sockops.h.
 */
#include "pw_sockops.h"

SEC("sockops")
int pw_sockops(struct bpf_sock_ops *skops)
{
	return pw_sockops_run(skops);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
