// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pw_lb_peer4 — service load balancing at cgroup/getpeername4: getpeername() of TCP and UDP sockets.
 * Attached (multi) to the cgroup of each enabled pod; logic in pw_lb.h.
 */
#include "pw_lb.h"

SEC("cgroup/getpeername4")
int pw_lb_peer4(struct bpf_sock_addr *ctx)
{
	return pw_lb_reverse(ctx, PW_LB_V4);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
