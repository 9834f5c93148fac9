// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pw_proxy_conn4 — send an app's outbound TCP connect() to its sidecar proxy
 * (Istio-compatible: proxy uid 1337, outbound port 15001), without iptables.
 *
 * Attached (multi) to the cgroup of each enabled pod that has a sidecar. The
 * original destination is saved by socket cookie (pw_odst_cookie) and the
 * connect() rewritten to 127.128.0.0/10:<proxy_port>, one loopback address
 * per connection (from the cookie), so the app↔proxy 4-tuple is unique on
 * the node and the proxy (listening on 0.0.0.0:<proxy_port>) accepts it.
 * Left alone: the proxy's own connects (uid), loopback destinations,
 * excluded ports, non-TCP.
 *
 * Maps: pw_config (read), pw_odst_cookie (write), pw_stats.
 */
#include "pw_common.h"

SEC("cgroup/connect4")
int pw_proxy_conn4(struct bpf_sock_addr *ctx)
{
	struct pw_config *cfg = pw_cfg();
	struct pw_odst o = {};
	__u64 cookie;
	__u16 dport;

	if (!cfg || !cfg->proxy_port)
		return 1;
	if (ctx->protocol != PW_IPPROTO_TCP) {
		pw_count(PW_PROXY_NOT_TCP, 0);
		return 1;
	}
	if ((__u32)bpf_get_current_uid_gid() == cfg->proxy_uid) {
		pw_count(PW_PROXY_PROXY_UID, 0);
		return 1;
	}
	if ((bpf_ntohl(ctx->user_ip4) >> 24) == 127) {
		pw_count(PW_PROXY_LOOPBACK, 0);
		return 1;
	}
	dport = bpf_ntohs((__u16)ctx->user_port);
#pragma unroll
	for (int i = 0; i < 8; i++) {
		if (cfg->excluded_ports[i] && cfg->excluded_ports[i] == dport) {
			pw_count(PW_PROXY_EXCLUDED_PORT, 0);
			return 1;
		}
	}
	cookie = bpf_get_socket_cookie(ctx);
	o.ip = ctx->user_ip4;
	o.port = (__u16)ctx->user_port;
	if (bpf_map_update_elem(&pw_odst_cookie, &cookie, &o, BPF_ANY)) {
		pw_count(PW_PROXY_ODST_FULL, 0);
		return 1;
	}
	/* 22 bits of the cookie pick the loopback address; never .0 */
	ctx->user_ip4 = bpf_htonl(PW_PROXY_NET | ((__u32)cookie & 0x3fffff) | 1);
	ctx->user_port = bpf_htons(cfg->proxy_port);
	pw_count(PW_PROXY_REDIRECTED, 0);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
