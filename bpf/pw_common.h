/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Helpers shared by podwarp's programs. Map layouts: build/include/pw_maps.h. */
#ifndef PW_COMMON_H
#define PW_COMMON_H

#include "pw_maps.h"
#include <asm-generic/errno-base.h>
#include <bpf/bpf_endian.h>

/* Count one event of `reason` (a PW_<PROG>_<REASON> slot) with `bytes`. */
static __always_inline void pw_count(__u32 reason, __u64 bytes)
{
	struct pw_counter *c = bpf_map_lookup_elem(&pw_stats, &reason);

	if (c) { /* per-CPU slot: plain increments are safe */
		c->packets++;
		c->bytes += bytes;
	}
}

static __always_inline struct pw_config *pw_cfg(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&pw_config, &zero);
}

/* Sidecar redirects go to 127.128.0.0/10: one address per connection, so
 * app↔proxy 4-tuples are unique on the node even across pods. */
#define PW_PROXY_NET 0x7f800000u
#define PW_PROXY_MASK 0xffc00000u

static __always_inline int pw_is_proxy_addr(__be32 ip)
{
	return (bpf_ntohl(ip) & PW_PROXY_MASK) == PW_PROXY_NET;
}

static __always_inline int pw_endpoint_enabled(__be32 ip)
{
	struct pw_ep_key k = { .ip = ip };
	struct pw_endpoint *e = bpf_map_lookup_elem(&pw_endpoints, &k);

	return e && (e->flags & PW_EP_ENABLED);
}

#define PW_AF_INET 2
#define PW_AF_INET6 10

/* ::ffff:a.b.c.d — an IPv4 peer of a dual-stack (AF_INET6) socket. */
static __always_inline int pw_v4mapped(__u32 w0, __u32 w1, __u32 w2)
{
	return w0 == 0 && w1 == 0 && w2 == bpf_htonl(0xffff);
}

/*
 * The IPv4 4-tuple of a socket, as seen from it (local first), for AF_INET
 * and for v4-mapped AF_INET6 sockets (a server listening on [::] accepts
 * IPv4 clients that way). Same code for sock_ops and sk_msg contexts: both
 * keep local_port in host order and the be16 remote port in the upper half.
 */
/* Every ctx field is read unconditionally, each with one load at a constant
 * offset (the verifier rejects a load through a computed ctx pointer, which
 * is what the compiler makes of a field chosen by a branch). */
#define PW_CTX_U32(ctx, field) (*(volatile __u32 *)&(ctx)->field)

#define PW_SOCK_KEY(ctx, k)                                                                        \
	({                                                                                         \
		__u32 __fam = PW_CTX_U32(ctx, family);                                             \
		__u32 __l4 = PW_CTX_U32(ctx, local_ip4), __r4 = PW_CTX_U32(ctx, remote_ip4);       \
		__u32 __l0 = PW_CTX_U32(ctx, local_ip6[0]), __l1 = PW_CTX_U32(ctx, local_ip6[1]);  \
		__u32 __l2 = PW_CTX_U32(ctx, local_ip6[2]), __l3 = PW_CTX_U32(ctx, local_ip6[3]);  \
		__u32 __r0 = PW_CTX_U32(ctx, remote_ip6[0]),                                       \
		      __r1 = PW_CTX_U32(ctx, remote_ip6[1]);                                       \
		__u32 __r2 = PW_CTX_U32(ctx, remote_ip6[2]),                                       \
		      __r3 = PW_CTX_U32(ctx, remote_ip6[3]);                                       \
		int __v6 = __fam == PW_AF_INET6 && pw_v4mapped(__l0, __l1, __l2) &&                \
			   pw_v4mapped(__r0, __r1, __r2);                                          \
		(k)->sip = __v6 ? __l3 : __l4;                                                     \
		(k)->dip = __v6 ? __r3 : __r4;                                                     \
		(k)->sport = bpf_htons(PW_CTX_U32(ctx, local_port));                               \
		(k)->dport = PW_CTX_U32(ctx, remote_port) >> 16;                                   \
		__fam == PW_AF_INET || __v6;                                                       \
	})

/* pod cgroups sit a few levels below the root (kubepods/<qos>/pod<uid>, or a
 * systemd slice below a prefix such as kind's): walk at most this many */
#define PW_CGROUP_LEVELS 12

#endif
