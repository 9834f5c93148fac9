/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Service load balancing at the socket: shared by pw_lb_conn4, pw_lb_send4,
 * pw_lb_recv4 and pw_lb_peer4 (one program per cgroup hook).
 *
 * Maps: pw_svc (read: master entry, then one slot), pw_backends (read),
 * pw_revnat (UDP reverse translation), pw_stats.
 * The writer (src/services/sync.ts) orders every update backends → slots →
 * master → prune, so a reader that saw a master count always finds the
 * slots and backends it points to.
 */
#ifndef PW_LB_H
#define PW_LB_H

#include "pw_common.h"

/* Picks a backend for (ip, port, proto); 0 when it is not a service or has
 * no backend. UDP is stable per socket (hash of the cookie), TCP random per
 * connection. */
static __always_inline int pw_lb_pick(__be32 ip, __be16 port, __u8 proto, __u64 cookie,
				      struct pw_backend *out)
{
	struct pw_svc_key k = { .ip = ip, .port = port, .proto = proto };
	struct pw_svc *master, *slot;
	struct pw_backend *b;
	__u32 pick;

	master = bpf_map_lookup_elem(&pw_svc, &k);
	if (!master) {
		pw_count(PW_LB_NOT_SERVICE, 0);
		return 0;
	}
	if (master->count == 0) {
		pw_count(PW_LB_NO_BACKEND, 0);
		return 0;
	}
	pick = proto == PW_IPPROTO_UDP ? (__u32)(cookie ^ (cookie >> 32)) * 2654435761u
				       : bpf_get_prandom_u32();
	k.slot = (pick % master->count) + 1;
	slot = bpf_map_lookup_elem(&pw_svc, &k);
	if (!slot) {
		pw_count(PW_LB_SLOT_MISSING, 0);
		return 0;
	}
	b = bpf_map_lookup_elem(&pw_backends, &slot->backend_id);
	if (!b) {
		pw_count(PW_LB_SLOT_MISSING, 0);
		return 0;
	}
	*out = *b;
	return 1;
}

static __always_inline __u8 pw_sock_proto(struct bpf_sock_addr *ctx)
{
	return ctx->protocol == PW_IPPROTO_UDP	 ? PW_IPPROTO_UDP
	       : ctx->protocol == PW_IPPROTO_TCP ? PW_IPPROTO_TCP
						 : 0;
}

/* Rewrites the destination of a connect()/sendmsg() to a service. */
static __always_inline int pw_lb_translate(struct bpf_sock_addr *ctx)
{
	__u8 proto = pw_sock_proto(ctx);
	__be32 vip = ctx->user_ip4;
	__be16 vport = (__be16)ctx->user_port;
	__u64 cookie = 0;
	struct pw_backend b;

	if (!proto)
		return 1;
	cookie = bpf_get_socket_cookie(ctx);
	if (!pw_lb_pick(vip, vport, proto, cookie, &b))
		return 1;
	{
		/* getpeername() (TCP and UDP) and UDP replies show the service */
		struct pw_revnat_key rk = { .cookie = cookie, .ip = b.ip, .port = b.port };
		struct pw_revnat rv = { .ip = vip, .port = vport };

		if (bpf_map_update_elem(&pw_revnat, &rk, &rv, BPF_ANY)) {
			pw_count(PW_LB_REV_NAT_FULL, 0);
			return 1; /* no reverse translation, no translation: kube-proxy's rules take it */
		}
	}
	ctx->user_ip4 = b.ip;
	ctx->user_port = b.port;
	pw_count(PW_LB_TRANSLATED, 0);
	return 1;
}

/* recvmsg() of a UDP socket and getpeername() of any socket talking to a
 * backend it was sent to show the service address. */
static __always_inline int pw_lb_reverse(struct bpf_sock_addr *ctx)
{
	struct pw_revnat_key rk = {};
	struct pw_revnat *rv;

	if (!pw_sock_proto(ctx))
		return 1;
	rk.cookie = bpf_get_socket_cookie(ctx);
	rk.ip = ctx->user_ip4;
	rk.port = (__be16)ctx->user_port;
	rv = bpf_map_lookup_elem(&pw_revnat, &rk);
	if (!rv)
		return 1;
	ctx->user_ip4 = rv->ip;
	ctx->user_port = rv->port;
	pw_count(PW_LB_REV_NAT, 0);
	return 1;
}

#endif
