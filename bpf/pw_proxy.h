/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Outbound capture to the sidecar proxy, shared by pw_proxy_conn4
 * (cgroup/connect4) and pw_proxy_conn6 (cgroup/connect6, v4-mapped
 * destinations of dual-stack sockets). It decides what Istio's iptables
 * (istio-iptables, nat OUTPUT in the pod) would send to the proxy's outbound
 * port, and leaves everything else to the pod's own rules:
 *  - the proxy's own connects: uid 1337 or gid 1337 (`--uid-owner`,
 *    `--gid-owner`);
 *  - loopback destinations, and the pod's own IP (Istio: traffic that leaves
 *    through lo and is not the proxy's returns);
 *  - excluded ports (agent --exclude-outbound-ports);
 *  - TCP to port 53: Istio's DNS capture (when on) redirects it to its DNS
 *    proxy on 15053, which podwarp cannot know; the pod's iptables decide;
 *  - anything not TCP.
 *
 * getpeername() of a captured socket answers its original destination
 * (pw_proxy_peer4/6, from pw_odst_tuple).
 *
 * Entry points: pw_proxy_connect4/6 (pw_proxy_conn4/6), pw_proxy_getpeername4/6
 * (pw_proxy_peer4/6). Maps: pw_config (read), pw_pod_cgroup (read),
 * pw_odst_cookie (write), pw_odst_tuple (read), pw_stats.
 */
#ifndef PW_PROXY_H
#define PW_PROXY_H

#include "pw_common.h"

#define PW_DNS_PORT 53
/* Is ip the address of the pod the current process belongs to? */
static __always_inline int pw_own_pod_ip(__be32 ip)
{
	struct pw_ep_key k = { .ip = ip };
	struct pw_pod_cg *pod = bpf_map_lookup_elem(&pw_pod_cgroup, &k);

	if (!pod)
		return 0;
#pragma unroll
	for (int level = 1; level <= PW_CGROUP_LEVELS; level++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);

		if (id == 0)
			return 0; /* below the process's own cgroup: not found */
		if (id == pod->id)
			return 1;
	}
	return 0;
}

/*
 * Whether to send a TCP connect() to ip:port (network order) to the proxy.
 * If so, its original destination is saved by socket cookie and the loopback
 * address to dial (one per connection, from the cookie, never .0) is returned
 * in *to; the caller rewrites the destination to *to:<proxy_port> and counts.
 * Returns 0 to leave the connect() alone (already counted).
 */
static __always_inline int pw_proxy_capture(void *ctx, __u32 protocol, __be32 ip, __u32 port,
					    struct pw_config *cfg, __be32 *to)
{
	__u64 ugid, cookie;
	struct pw_odst o = {};
	__u16 dport;

	if (protocol != PW_IPPROTO_TCP) {
		pw_count(PW_PROXY_NOT_TCP, 0);
		return 0;
	}
	ugid = bpf_get_current_uid_gid();
	if ((__u32)ugid == cfg->proxy_uid) {
		pw_count(PW_PROXY_PROXY_UID, 0);
		return 0;
	}
	if ((__u32)(ugid >> 32) == cfg->proxy_gid) {
		pw_count(PW_PROXY_PROXY_GID, 0);
		return 0;
	}
	if ((bpf_ntohl(ip) >> 24) == 127) {
		pw_count(PW_PROXY_LOOPBACK, 0);
		return 0;
	}
	dport = bpf_ntohs((__u16)port);
	if (dport == PW_DNS_PORT) {
		pw_count(PW_PROXY_DNS_PORT, 0);
		return 0;
	}
#pragma unroll
	for (int i = 0; i < 8; i++) {
		if (cfg->excluded_ports[i] && cfg->excluded_ports[i] == dport) {
			pw_count(PW_PROXY_EXCLUDED_PORT, 0);
			return 0;
		}
	}
	if (pw_own_pod_ip(ip)) {
		pw_count(PW_PROXY_OWN_POD_IP, 0);
		return 0;
	}
	cookie = bpf_get_socket_cookie(ctx);
	o.ip = ip;
	o.port = (__u16)port;
	if (bpf_map_update_elem(&pw_odst_cookie, &cookie, &o, BPF_ANY)) {
		pw_count(PW_PROXY_ODST_FULL, 0);
		return 0;
	}
	/* 22 bits of the cookie pick the loopback address; never .0 */
	*to = bpf_htonl(PW_PROXY_NET | ((__u32)cookie & 0x3fffff) | 1);
	return 1;
}

/*
 * getpeername() of an app socket the capture sent to the proxy: the original
 * destination, as with iptables REDIRECT (the socket keeps the address it
 * dialled; NAT happens on its packets). peer_ip/peer_port (network order) is
 * what the kernel would return; local the socket's own IPv4 address and port
 * (host order). Returns 1 and fills *o when the peer is our proxy address.
 */
static __always_inline int pw_proxy_peer(struct pw_config *cfg, __be32 peer_ip, __u32 peer_port,
					 __be32 local_ip, __u32 local_port, struct pw_odst *o)
{
	struct pw_sock_key k = {};
	struct pw_odst *saved;

	if (!pw_is_proxy_addr(peer_ip) || (__u16)peer_port != bpf_htons(cfg->proxy_port))
		return 0;
	k.sip = local_ip;
	k.dip = peer_ip;
	k.sport = bpf_htons((__u16)local_port);
	k.dport = (__u16)peer_port;
	saved = bpf_map_lookup_elem(&pw_odst_tuple, &k);
	if (!saved)
		return 0;
	*o = *saved;
	pw_count(PW_PROXY_PEER_ODST, 0);
	return 1;
}

/*
 * connect() of an AF_INET socket (pw_proxy_conn4): a captured connect is
 * rewritten to 127.128.x.y:<proxy_port>. Sidecar capture is off while
 * pw_config.proxy_port is 0.
 */
static __always_inline int pw_proxy_connect4(struct bpf_sock_addr *ctx)
{
	struct pw_config *cfg = pw_cfg();
	__be32 to;

	if (!cfg || !cfg->proxy_port)
		return 1;
	if (!pw_proxy_capture(ctx, ctx->protocol, ctx->user_ip4, ctx->user_port, cfg, &to))
		return 1;
	ctx->user_ip4 = to;
	ctx->user_port = bpf_htons(cfg->proxy_port);
	pw_count(PW_PROXY_REDIRECTED, 0);
	return 1;
}

/*
 * connect() of an AF_INET6 socket (pw_proxy_conn6): a v4-mapped destination
 * ::ffff:a.b.c.d is captured as pw_proxy_connect4 would, and rewritten to
 * ::ffff:127.128.x.y:<proxy_port>; a real IPv6 destination is left alone.
 */
static __always_inline int pw_proxy_connect6(struct bpf_sock_addr *ctx)
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

/* getpeername() of an AF_INET socket (pw_proxy_peer4). */
static __always_inline int pw_proxy_getpeername4(struct bpf_sock_addr *ctx)
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

/* getpeername() of an AF_INET6 socket with a v4-mapped peer (pw_proxy_peer6). */
static __always_inline int pw_proxy_getpeername6(struct bpf_sock_addr *ctx)
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

#endif
