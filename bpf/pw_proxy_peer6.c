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
	struct pw_config *cfg = pw_cfg();
	struct bpf_sock *sk = ctx->sk;
	__u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1], w2 = ctx->user_ip6[2];
	struct pw_odst o;

	if (!cfg || !cfg->proxy_port || !sk || !pw_v4mapped(w0, w1, w2))
		return 1;
	/* a v4-mapped connected socket keeps its IPv4 source in src_ip4 */
	if (!pw_proxy_peer(cfg, ctx->user_ip6[3], ctx->user_port, sk->src_ip4, sk->src_port, &o))
		return 1;
	ctx->user_ip6[3] = o.ip;
	ctx->user_port = o.port;
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
