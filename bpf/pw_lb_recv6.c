// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pw_lb_recv6 — service load balancing at cgroup/recvmsg6: recvmsg()/recvfrom() of AF_INET6 UDP sockets: a v4-mapped reply's source.
 * Real IPv6 destinations are left alone. Attached (multi) to the cgroup of each enabled pod; logic in pw_lb.h.
 */
#include "pw_lb.h"

SEC("cgroup/recvmsg6")
int pw_lb_recv6(struct bpf_sock_addr *ctx)
{
	return pw_lb_reverse(ctx, PW_LB_V6);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
