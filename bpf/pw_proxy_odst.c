// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pw_proxy_odst — answer getsockopt(SOL_IP, SO_ORIGINAL_DST) on the proxy's
 * accepted socket with the destination the app asked for, as iptables
 * REDIRECT + conntrack would. Other options pass through untouched.
 *
 * Attached (multi) to the cgroup of each enabled pod that has a sidecar.
 * Maps: pw_odst_tuple (read), pw_stats.
 */
#include "pw_common.h"

#define SOL_IP 0
#define SO_ORIGINAL_DST 80
#define AF_INET 2

struct pw_sockaddr_in {
	__u16 family;
	__be16 port;
	__be32 addr;
	__u8 zero[8];
};

SEC("cgroup/getsockopt")
int pw_proxy_odst(struct bpf_sockopt *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct pw_sockaddr_in *sa;
	struct pw_sock_key k = {};
	struct pw_odst *o;

	if (ctx->level != SOL_IP || ctx->optname != SO_ORIGINAL_DST || !sk)
		return 1;
	/* the app's socket is the proxy socket's peer: key it from that side */
	k.sip = sk->dst_ip4;
	k.dip = sk->src_ip4;
	k.sport = (__be16)(*(volatile __u32 *)&sk
				    ->dst_port); /* 4-byte load works on 5.10 and later */
	k.dport = bpf_htons((__u16)sk->src_port);
	o = bpf_map_lookup_elem(&pw_odst_tuple, &k);
	if (!o) {
		pw_count(PW_ODST_NOT_FOUND, 0);
		return 1;
	}
	sa = ctx->optval;
	if ((void *)(sa + 1) > ctx->optval_end)
		return 1;
	sa->family = AF_INET;
	sa->port = o->port;
	sa->addr = o->ip;
	__builtin_memset(sa->zero, 0, sizeof(sa->zero));
	/* two separate 4-byte stores: the verifier rejects a merged 8-byte one */
	*(volatile __s32 *)&ctx->optlen = sizeof(*sa);
	*(volatile __s32 *)&ctx->retval = 0;
	pw_count(PW_ODST_ANSWERED, 0);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
