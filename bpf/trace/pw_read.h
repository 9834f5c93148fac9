/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * pw_read_acct — flow control for the sockmap fast path: count the bytes
 * each accelerated socket reads from its psock ingress queue (the data its
 * peer's sendmsg() redirected into it) into pw_sock_read. pw_sk_msg then
 * knows how much the peer holds unread and moves a flow to TCP before that
 * passes PW_QUEUE_MAX_BYTES (a redirected message skips the receive window).
 *
 * fexit on the kernel function that copies the queue to the reader; its
 * name changed across kernels, with the same arguments
 *   (struct sock *sk, struct sk_psock *psock, struct msghdr *msg, int len, int flags) → int copied
 * so one .c per name includes this body and the loader loads the first
 * whose function the running kernel has (loader/flowcontrol.ts loadReadCounter).
 * Attached by a pinned bpf_link (loader/native/pw_trace_link.c).
 *
 * Maps: pw_flows (read: only sockets a flow redirects into are counted),
 * pw_sock_read (write).
 */
#include "pw_common.h"
#include <bpf/bpf_core_read.h>

/* kernel structs, relocated against the running kernel's BTF (CO-RE) */
struct pw_in6 {
	__u32 w[4];
};

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	struct pw_in6 skc_v6_daddr;
	struct pw_in6 skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

#define PW_MSG_PEEK 2

/* The socket's key in pw_sock (local first), as PW_SOCK_KEY builds it. */
static __always_inline int pw_sk_key(struct sock *sk, struct pw_sock_key *k)
{
	unsigned short fam = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (fam == PW_AF_INET) {
		k->sip = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		k->dip = BPF_CORE_READ(sk, __sk_common.skc_daddr);
	} else if (fam == PW_AF_INET6) {
		struct pw_in6 l = {}, r = {};

		BPF_CORE_READ_INTO(&l, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&r, sk, __sk_common.skc_v6_daddr);
		if (!pw_v4mapped(l.w[0], l.w[1], l.w[2]) || !pw_v4mapped(r.w[0], r.w[1], r.w[2]))
			return 0;
		k->sip = l.w[3];
		k->dip = r.w[3];
	} else {
		return 0;
	}
	k->sport = bpf_htons(BPF_CORE_READ(sk, __sk_common.skc_num));
	k->dport = BPF_CORE_READ(sk, __sk_common.skc_dport);
	return 1;
}

/* ctx: the five arguments, then the return value */
#define PW_READ_ACCT_BODY(ctx)                                                                     \
	do {                                                                                       \
		struct sock *sk = (struct sock *)(ctx)[0];                                         \
		int flags = (int)(ctx)[4];                                                         \
		int copied = (int)(ctx)[5];                                                        \
		struct pw_sock_key k = {}, sender;                                                 \
		struct pw_read *r;                                                                 \
                                                                                                   \
		if (copied <= 0 || (flags & PW_MSG_PEEK) || !pw_sk_key(sk, &k))                    \
			return 0;                                                                  \
		sender.sip = k.dip;                                                                \
		sender.dip = k.sip;                                                                \
		sender.sport = k.dport;                                                            \
		sender.dport = k.sport;                                                            \
		if (!bpf_map_lookup_elem(&pw_flows, &sender))                                      \
			return 0; /* not ours (another sockmap user), or never redirected into */  \
		r = bpf_map_lookup_elem(&pw_sock_read, &k);                                        \
		if (!r) {                                                                          \
			struct pw_read init = {};                                                  \
                                                                                                   \
			bpf_map_update_elem(&pw_sock_read, &k, &init, BPF_NOEXIST);                \
			r = bpf_map_lookup_elem(&pw_sock_read, &k);                                \
		}                                                                                  \
		if (r) /* one reader at a time (socket lock), atomic anyway */                     \
			__sync_fetch_and_add(&r->bytes, (__u64)copied);                            \
		return 0;                                                                          \
	} while (0)
