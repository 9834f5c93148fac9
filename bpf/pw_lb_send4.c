// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pw_lb_send4 — service load balancing at cgroup/sendmsg4: sendmsg()/sendto() of unconnected UDP sockets, AF_INET and v4-mapped AF_INET6 (udpv6_sendmsg hands those to udp_sendmsg).
 * Attached (multi) to the cgroup of each enabled pod; logic in pw_lb.h.
 */
#include "pw_lb.h"

SEC("cgroup/sendmsg4")
int pw_lb_send4(struct bpf_sock_addr *ctx)
{
	return pw_lb_translate(ctx, PW_LB_V4, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
