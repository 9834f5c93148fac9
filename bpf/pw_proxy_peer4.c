// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pw_proxy_peer4 — getpeername() of an app socket that pw_proxy_conn4 sent to
 * the sidecar proxy returns the address the app dialled, as it does under
 * Istio's iptables REDIRECT (not the proxy's 127.128.x.y:<proxy_port>).
 *
 * Attached (multi) to the cgroup of each enabled pod that has a sidecar, with
 * the capture (PW_HOOK_CONNECT4). Maps: pw_config, pw_odst_tuple (read), pw_stats.
 */
#include "pw_proxy.h"

SEC("cgroup/getpeername4")
int pw_proxy_peer4(struct bpf_sock_addr *ctx)
{
	struct pw_config *cfg = pw_cfg();
	struct bpf_sock *sk = ctx->sk;
	struct pw_odst o;

	if (!cfg || !cfg->proxy_port || !sk)
		return 1;
	if (!pw_proxy_peer(cfg, ctx->user_ip4, ctx->user_port, sk->src_ip4, sk->src_port, &o))
		return 1;
	ctx->user_ip4 = o.ip;
	ctx->user_port = o.port;
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
