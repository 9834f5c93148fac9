/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Service load balancing at the socket: shared by pw_lb_conn4, pw_lb_send4,
 * pw_lb_recv4 and pw_lb_peer4 (AF_INET sockets), and pw_lb_conn6,
 * pw_lb_recv6 and pw_lb_peer6 (AF_INET6 sockets talking to a v4-mapped
 * address ::ffff:a.b.c.d; one program per cgroup hook).
 *
 * Maps: pw_svc (read: master entry, then one slot), pw_backends (read),
 * pw_revnat (UDP reverse translation), pw_affinity, pw_aff_match and
 * pw_lb_client (sessionAffinity ClientIP), pw_udp_flow and pw_udp_serve (unconnected UDP
 * flow memory), pw_stats.
 * The writer (src/services/sync.ts) orders every update backends → slots →
 * master → prune, so a reader that saw a master count always finds the
 * slots and backends it points to.
 *
 * Connected UDP is left to kube-proxy: connect() of a UDP socket to a
 * Service is not translated (udp_connected_left), so kube-proxy's conntrack
 * cleanup moves a long-lived socket off a removed backend, as without
 * podwarp (docs/services.md). Unconnected UDP (per datagram) and TCP are.
 *
 * Dual-stack sockets: a v4-mapped destination is IPv4 on the wire and in
 * kube-proxy's rules. The kernel runs the INET6 connect hook for TCP and
 * UDP connect(), the UDP6 recvmsg hook and the INET6 getpeername hook;
 * udpv6_sendmsg hands a v4-mapped datagram to udp_sendmsg, which runs the
 * UDP4 sendmsg hook (pw_lb_send4), so there is no sendmsg6 program. Real
 * IPv6 addresses are left alone (podwarp is IPv4-only).
 */
#ifndef PW_LB_H
#define PW_LB_H

#include "pw_common.h"

/*
 * sessionAffinity ClientIP, as kube-proxy does it (iptables: `-m recent
 * --rcheck --seconds T --reap` per endpoint in the service chain, `--set` in
 * the endpoint chain; nftables: per-endpoint sets with a timeout, `update` at
 * each new connection): a client that used a backend of this frontend less
 * than T seconds ago goes to it again while it is still one of the frontend's
 * backends; every use restarts the timer. The client is the pod's IPv4
 * address, as kube-proxy keys it: the socket's source address is not chosen
 * yet at connect(), so the pod is found by the connecting process's cgroup
 * (pw_lb_client, written by the agent for the pods with the socket LB).
 * Keyed like kube-proxy's `recent` lists and affinity sets, the memory can be
 * handed over both ways when a pod's acceleration is switched on or off
 * (src/services/affinity-handover.ts). Time is
 * CLOCK_MONOTONIC (bpf_ktime_get_ns), like the jiffies xt_recent and
 * nftables timeouts count (neither advances in suspend), and the clock
 * Node's process.hrtime reads, so `podwarp dump affinity` can show ages.
 */
#define PW_NSEC 1000000000ull

/* The IPv4 address of the pod whose cgroup is an ancestor of the current
 * process (pw_lb_client), 0 if none is. */
static __always_inline __be32 pw_lb_client_ip(void)
{
#pragma unroll
	for (int level = 1; level <= PW_CGROUP_LEVELS; level++) {
		struct pw_cgroup_key ck = { .id = bpf_get_current_ancestor_cgroup_id(level) };
		struct pw_lb_client *c;

		if (ck.id == 0)
			return 0; /* below the process's own cgroup: not found */
		c = bpf_map_lookup_elem(&pw_lb_client, &ck);
		if (c)
			return c->ip;
	}
	return 0;
}

/* The remembered backend id of ak, 0 if none, expired or no longer the frontend's. */
static __always_inline __u32 pw_aff_lookup(const struct pw_aff_key *ak, __u32 timeout_s, __u64 now)
{
	struct pw_aff_match_key mk = { .ip = ak->ip, .port = ak->port, .proto = ak->proto };
	struct pw_affinity *a = bpf_map_lookup_elem(&pw_affinity, ak);

	if (!a)
		return 0;
	/* last_ns may be a hair ahead of now (another CPU wrote it since): fresh */
	if (now > a->last_ns && now - a->last_ns > (__u64)timeout_s * PW_NSEC) {
		pw_count(PW_LB_AFFINITY_EXPIRED, 0);
		return 0;
	}
	mk.backend_id = a->backend_id;
	if (!bpf_map_lookup_elem(&pw_aff_match, &mk)) {
		pw_count(PW_LB_AFFINITY_GONE, 0);
		return 0;
	}
	return a->backend_id;
}

/* Remembers (or refreshes) the client's backend; an LRU map: never full. */
static __always_inline void pw_aff_save(const struct pw_aff_key *ak, __u32 backend_id, __u64 now)
{
	struct pw_affinity v = { .backend_id = backend_id, .last_ns = now };

	bpf_map_update_elem(&pw_affinity, ak, &v, BPF_ANY);
}

/*
 * Unconnected UDP flow memory, as kube-proxy's conntrack entry: the first
 * datagram of a (socket, frontend) flow chooses a backend and pw_udp_flow
 * remembers it; every later datagram goes there while the entry is younger
 * than conntrack's UDP timeout and the backend's IP is still one of the
 * frontend's serving endpoints (pw_udp_serve: kube-proxy's conntrack cleanup,
 * CleanStaleEntries, deletes a UDP entry only once its endpoint IP stops
 * serving, whatever scaling, another endpoint's readiness, topology hints or
 * terminating state do). The timeout is nf_conntrack_proto_udp's: 30 s
 * (nf_conntrack_udp_timeout) from the last datagram, 120 s
 * (nf_conntrack_udp_timeout_stream) once the socket read a reply from the
 * backend and the flow was older than 2 s at its last datagram or reply.
 */
static __always_inline int pw_udp_flow_live(const struct pw_udp_flow *f, __u64 now)
{
	__u64 ttl = PW_UDP_CT_TIMEOUT_OPENED_NS;

	if (f->state == PW_UDP_CT_ANSWERED &&
	    f->last_ns - f->first_ns > PW_UDP_FLOW_STREAM_AFTER_NS)
		ttl = PW_UDP_CT_TIMEOUT_ANSWERED_NS;
	/* last_ns may be a hair ahead of now (another CPU wrote it since): live */
	return now <= f->last_ns || now - f->last_ns <= ttl;
}

/*
 * A flow that chooses anew (expired, or its backend stopped serving) leaves
 * its old backend: the socket's reverse translation for that backend goes
 * too, as kube-proxy's conntrack entry expires or is cleaned up with it (a
 * late reply of the old backend then shows its own address, as it would
 * through kube-proxy). Kept when another frontend of the socket wrote it
 * since (a backend behind two Services): that flow still uses it.
 */
static __always_inline void pw_udp_flow_forget(const struct pw_udp_flow_key *fk,
					       const struct pw_udp_flow *f)
{
	struct pw_revnat_key rk = { .cookie = fk->cookie, .ip = f->ip, .port = f->port };
	struct pw_revnat *rv = bpf_map_lookup_elem(&pw_revnat, &rk);

	if (rv && rv->ip == fk->ip && rv->port == fk->port)
		bpf_map_delete_elem(&pw_revnat, &rk);
}

/* The remembered backend of flow fk, refreshed, in out; 0 if none, expired or no longer serving. */
static __always_inline int pw_udp_flow_lookup(const struct pw_udp_flow_key *fk, __u64 now,
					      struct pw_backend *out)
{
	struct pw_udp_serve_key sk = { .ip = fk->ip, .port = fk->port, .proto = fk->proto };
	struct pw_udp_flow *f = bpf_map_lookup_elem(&pw_udp_flow, fk);

	if (!f)
		return 0;
	if (!pw_udp_flow_live(f, now)) {
		pw_count(PW_LB_UDP_FLOW_EXPIRED, 0);
		pw_udp_flow_forget(fk, f);
		return 0;
	}
	sk.ep_ip = f->ip;
	if (!bpf_map_lookup_elem(&pw_udp_serve, &sk)) {
		pw_count(PW_LB_UDP_FLOW_GONE, 0);
		pw_udp_flow_forget(fk, f);
		return 0;
	}
	out->ip = f->ip;
	out->port = f->port;
	out->proto = fk->proto;
	out->_pad0 = 0;
	f->last_ns = now;
	pw_count(PW_LB_UDP_FLOW_HIT, 0);
	return 1;
}

/* Remembers a new flow's backend (replacing an expired or gone entry); an LRU map: never full. */
static __always_inline void pw_udp_flow_save(const struct pw_udp_flow_key *fk,
					     const struct pw_backend *b, __u64 now)
{
	struct pw_udp_flow v = { .ip = b->ip,
				 .port = b->port,
				 .state = PW_UDP_CT_OPENED,
				 .first_ns = now,
				 .last_ns = now };

	bpf_map_update_elem(&pw_udp_flow, fk, &v, BPF_ANY);
}

/* A reply of backend (ip, port) read by the socket of flow fk: the flow is answered (conntrack: SEEN_REPLY), refreshed. */
static __always_inline void pw_udp_flow_answered(const struct pw_udp_flow_key *fk, __be32 ip,
						 __be16 port)
{
	struct pw_udp_flow *f = bpf_map_lookup_elem(&pw_udp_flow, fk);
	__u64 now;

	if (!f || f->ip != ip || f->port != port)
		return;
	now = bpf_ktime_get_ns();
	if (!pw_udp_flow_live(f, now))
		return; /* expired: its next datagram chooses anew, as a new conntrack entry */
	f->state = PW_UDP_CT_ANSWERED;
	f->last_ns = now;
}

/* Picks a backend for (ip, port, proto); 0 when it is not a service or has
 * no backend. Unconnected UDP: the flow's remembered backend first (even
 * when the frontend has no backend for new flows here: kube-proxy's
 * conntrack entry outlives a traffic policy change too). Then, with
 * ClientIP affinity, the client's remembered backend; else random (TCP:
 * per connection, UDP: per new flow, then remembered). */
static __always_inline int pw_lb_pick(struct bpf_sock_addr *ctx, __be32 ip, __be16 port, __u8 proto,
				      __u64 cookie, struct pw_backend *out)
{
	struct pw_svc_key k = { .ip = ip, .port = port, .proto = proto };
	struct pw_aff_key ak = { .ip = ip, .port = port, .proto = proto };
	struct pw_udp_flow_key fk = { .cookie = cookie, .ip = ip, .port = port, .proto = proto };
	struct pw_svc *master, *slot;
	struct pw_backend *b;
	__u32 timeout, id;
	__u64 now = 0;

	master = bpf_map_lookup_elem(&pw_svc, &k);
	if (!master) {
		pw_count(PW_LB_NOT_SERVICE, 0);
		return 0;
	}
	if (proto == PW_IPPROTO_UDP) {
		now = bpf_ktime_get_ns();
		if (pw_udp_flow_lookup(&fk, now, out))
			return 1;
	}
	if (master->count == 0) {
		pw_count(PW_LB_NO_BACKEND, 0);
		return 0;
	}
	timeout = master->backend_id; /* the master entry's affinity timeout (s) */
	if (timeout) {
		ak.client = pw_lb_client_ip();
		if (!ak.client) {
			/* no client address to remember by: kube-proxy's rules and memory take it */
			pw_count(PW_LB_AFFINITY_NO_CLIENT, 0);
			return 0;
		}
		now = bpf_ktime_get_ns();
		id = pw_aff_lookup(&ak, timeout, now);
		b = id ? bpf_map_lookup_elem(&pw_backends, &id) : 0;
		if (b) {
			*out = *b;
			pw_aff_save(&ak, id, now);
			pw_count(PW_LB_AFFINITY_HIT, 0);
			if (proto == PW_IPPROTO_UDP)
				pw_udp_flow_save(&fk, b, now);
			return 1;
		}
	}
	k.slot = (bpf_get_prandom_u32() % master->count) + 1;
	slot = bpf_map_lookup_elem(&pw_svc, &k);
	if (!slot) {
		pw_count(PW_LB_SLOT_MISSING, 0);
		return 0;
	}
	id = slot->backend_id;
	b = bpf_map_lookup_elem(&pw_backends, &id);
	if (!b) {
		pw_count(PW_LB_SLOT_MISSING, 0);
		return 0;
	}
	*out = *b;
	if (timeout)
		pw_aff_save(&ak, id, now);
	if (proto == PW_IPPROTO_UDP)
		pw_udp_flow_save(&fk, b, now);
	return 1;
}

static __always_inline __u8 pw_sock_proto(struct bpf_sock_addr *ctx)
{
	return ctx->protocol == PW_IPPROTO_UDP	 ? PW_IPPROTO_UDP
	       : ctx->protocol == PW_IPPROTO_TCP ? PW_IPPROTO_TCP
						 : 0;
}

/* Which socket family a program serves (a constant: each program compiles only its own ctx accesses). */
#define PW_LB_V4 0
#define PW_LB_V6 1

/* The IPv4 destination of the context: user_ip4, or the embedded address of
 * a v4-mapped user_ip6. 0 for a real IPv6 address: left alone. */
static __always_inline int pw_lb_addr(struct bpf_sock_addr *ctx, int v6, __be32 *ip)
{
	if (!v6) {
		*ip = ctx->user_ip4;
		return 1;
	}
	if (!pw_v4mapped(ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2]))
		return 0;
	*ip = ctx->user_ip6[3];
	return 1;
}

static __always_inline void pw_lb_set_addr(struct bpf_sock_addr *ctx, int v6, __be32 ip,
					   __be16 port)
{
	/* ctx "changes" here: clang may not store through a ctx+offset pointer
	 * it computed for an earlier load (the verifier rejects a modified ctx) */
	asm volatile("" : "+r"(ctx));
	if (v6)
		ctx->user_ip6[3] = ip;
	else
		ctx->user_ip4 = ip;
	ctx->user_port = port;
}

/* Whether (ip, port, proto) is a Service frontend. */
static __always_inline int pw_lb_is_frontend(__be32 ip, __be16 port, __u8 proto)
{
	struct pw_svc_key k = { .ip = ip, .port = port, .proto = proto };

	return bpf_map_lookup_elem(&pw_svc, &k) != 0;
}

/*
 * A sendmsg() of a connected UDP socket to the address it is connected to.
 * AF_INET sockets never come here for that (the UDP4 sendmsg hook runs only
 * for an explicit address), but a connected v4-mapped socket's send() does:
 * udpv6_sendmsg passes the peer as an explicit IPv4 address to
 * udp_sendmsg. Connected UDP is kube-proxy's: leave it.
 */
static __always_inline int pw_lb_to_connected_peer(struct bpf_sock_addr *ctx, __be32 ip)
{
	struct bpf_sock *sk = ctx->sk;

	return sk->state == BPF_TCP_ESTABLISHED && sk->dst_ip4 == ip;
}

/*
 * Rewrites the destination of a connect() (at_connect) or an unconnected
 * UDP sendmsg() to a service. connect() of a UDP socket is left to
 * kube-proxy (see the top of this file).
 */
static __always_inline int pw_lb_translate(struct bpf_sock_addr *ctx, int v6, int at_connect)
{
	__u8 proto = pw_sock_proto(ctx);
	__be16 vport = (__be16)ctx->user_port;
	__u64 cookie = 0;
	struct pw_backend b;
	__be32 vip;

	if (!proto || !pw_lb_addr(ctx, v6, &vip))
		return 1;
	if (proto == PW_IPPROTO_UDP && at_connect) {
		if (pw_lb_is_frontend(vip, vport, proto))
			pw_count(PW_LB_UDP_CONNECTED_LEFT, 0);
		return 1;
	}
	if (proto == PW_IPPROTO_UDP && pw_lb_to_connected_peer(ctx, vip))
		return 1;
	cookie = bpf_get_socket_cookie(ctx);
	if (!pw_lb_pick(ctx, vip, vport, proto, cookie, &b))
		return 1;
	{
		/* getpeername() (TCP) and UDP replies show the service */
		struct pw_revnat_key rk = { .cookie = cookie, .ip = b.ip, .port = b.port };
		struct pw_revnat rv = { .ip = vip, .port = vport };

		if (bpf_map_update_elem(&pw_revnat, &rk, &rv, BPF_ANY)) {
			pw_count(PW_LB_REV_NAT_FULL, 0);
			return 1; /* no reverse translation, no translation: kube-proxy's rules take it */
		}
	}
	pw_lb_set_addr(ctx, v6, b.ip, b.port);
	pw_count(PW_LB_TRANSLATED, 0);
	if (v6)
		pw_count(PW_LB_V4MAPPED, 0);
	return 1;
}

/* recvmsg() of a UDP socket and getpeername() of any socket talking to a
 * backend it was sent to show the service address. */
static __always_inline int pw_lb_reverse(struct bpf_sock_addr *ctx, int v6)
{
	struct pw_revnat_key rk = {};
	struct pw_revnat *rv;
	__be32 ip;

	if (!pw_sock_proto(ctx) || !pw_lb_addr(ctx, v6, &ip))
		return 1;
	rk.cookie = bpf_get_socket_cookie(ctx);
	rk.ip = ip;
	rk.port = (__be16)ctx->user_port;
	rv = bpf_map_lookup_elem(&pw_revnat, &rk);
	if (!rv)
		return 1;
	if (ctx->protocol == PW_IPPROTO_UDP) {
		struct pw_udp_flow_key fk = {
			.cookie = rk.cookie, .ip = rv->ip, .port = rv->port, .proto = PW_IPPROTO_UDP
		};

		pw_udp_flow_answered(&fk, ip, rk.port);
	}
	pw_lb_set_addr(ctx, v6, rv->ip, rv->port);
	pw_count(PW_LB_REV_NAT, 0);
	if (v6)
		pw_count(PW_LB_V4MAPPED, 0);
	return 1;
}

#endif
