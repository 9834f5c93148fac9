// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pw_proxy_peer6 — pw_proxy_peer4 for a dual-stack socket that
 * pw_proxy_conn6 sent to the proxy (peer ::ffff:127.128.x.y): getpeername()
 * returns the ::ffff:a.b.c.d the app dialled.
 *
 * Attached (multi) to the cgroup of each enabled pod that has a sidecar, with
 * the capture (PW_HOOK_CONNECT4). Maps: pw_config, pw_odst_tuple (read), pw_stats.
 */
#include "pw_proxy.h"

SEC("cgroup/getpeername6")
int pw_proxy_peer6(struct bpf_sock_addr *ctx)
{
	return pw_proxy_getpeername6(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
