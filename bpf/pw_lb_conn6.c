// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pw_lb_conn6 — service load balancing at cgroup/connect6: connect() of AF_INET6 TCP sockets to a v4-mapped address (UDP: counted, left to kube-proxy).
 * Real IPv6 destinations are left alone. Attached (multi) to the cgroup of each enabled pod; logic in pw_lb.h.
 */
#include "pw_lb.h"

SEC("cgroup/connect6")
int pw_lb_conn6(struct bpf_sock_addr *ctx)
{
	return pw_lb_translate(ctx, PW_LB_V6, 1);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
