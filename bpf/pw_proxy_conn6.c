// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pw_proxy_conn6 — the same capture as pw_proxy_conn4 for dual-stack
 * (AF_INET6) sockets dialling an IPv4 address as ::ffff:a.b.c.d (Java, .NET
 * and others do): such a connect() runs the INET6 hook, not connect4, and
 * would bypass the sidecar. It is rewritten to ::ffff:127.128.x.y:<proxy_port>;
 * the socket stays AF_INET6, talks IPv4 on the wire, and pw_sockops keys it
 * by its IPv4 4-tuple like any other, so the proxy's SO_ORIGINAL_DST
 * (pw_proxy_odst) answers for it too.
 * Pure IPv6 destinations are left alone (podwarp is IPv4-only; Istio's
 * ip6tables capture, if any, applies).
 *
 * Attached (multi) to the cgroup of each enabled pod that has a sidecar, with
 * pw_proxy_conn4 (the same PW_HOOK_CONNECT4 bit).
 * Maps: pw_config (read), pw_pod_cgroup (read), pw_odst_cookie (write), pw_stats.
 */
#include "pw_proxy.h"

SEC("cgroup/connect6")
int pw_proxy_conn6(struct bpf_sock_addr *ctx)
{
	struct pw_config *cfg = pw_cfg();
	__u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1], w2 = ctx->user_ip6[2];
	__be32 ip4 = ctx->user_ip6[3], to;

	if (!cfg || !cfg->proxy_port)
		return 1;
	if (!pw_v4mapped(w0, w1, w2)) {
		pw_count(PW_PROXY_NOT_IPV4, 0);
		return 1;
	}
	if (!pw_proxy_capture(ctx, ctx->protocol, ip4, ctx->user_port, cfg, &to))
		return 1;
	ctx->user_ip6[3] = to; /* words 0-2 already say ::ffff: */
	ctx->user_port = bpf_htons(cfg->proxy_port);
	pw_count(PW_PROXY_REDIRECTED_V6, 0);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
