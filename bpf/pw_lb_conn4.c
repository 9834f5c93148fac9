// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pw_lb_conn4 — service load balancing at cgroup/connect4: connect() of TCP sockets (UDP: counted, left to kube-proxy).
 * Attached (multi) to the cgroup of each enabled pod; logic in pw_lb.h.
 */
#include "pw_lb.h"

SEC("cgroup/connect4")
int pw_lb_conn4(struct bpf_sock_addr *ctx)
{
	return pw_lb_translate(ctx, PW_LB_V4, 1);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
