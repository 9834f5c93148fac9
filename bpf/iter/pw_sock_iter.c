// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pw_sock_iter — report, for every socket in pw_sock, whether data another
 * socket redirected into it is still waiting to be read.
 *
 * Deleting a socket from a sockhash frees its psock's ingress queue (the
 * bytes are lost to the application), so the agent removes a socket only
 * after this iterator says its queue is empty. Pinned with
 * `bpftool iter pin … map pinned …/pw_sock`; reading the pin runs it.
 * Standalone (no podwarp maps): bpftool iter cannot reuse pinned maps.
 * One struct pw_sock_drain record per socket (abi/schema.ts SOCK_DRAIN,
 * decoded by loader/sockdrain.ts).
 * Reads kernel internals (sock.sk_user_data → sk_psock.ingress_msg) with
 * CO-RE, relocated against the running kernel's BTF.
 */
#include "pw_types.h"
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct list_head {
	struct list_head *next;
} __attribute__((preserve_access_index));

struct sk_psock {
	struct list_head ingress_msg;
} __attribute__((preserve_access_index));

struct sock {
	void *sk_user_data;
} __attribute__((preserve_access_index));

struct seq_file;
struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((preserve_access_index));

struct bpf_iter__sockmap {
	struct bpf_iter_meta *meta;
	void *key;
	struct sock *sk;
} __attribute__((preserve_access_index));

/* low bits are flags (NOCOPY, BPF, PSOCK on 6.x); pointers are 8-aligned */
#define SK_USER_DATA_PTRMASK (~7UL)

SEC("iter/sockmap")
int pw_sock_iter(struct bpf_iter__sockmap *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct sock *sk = ctx->sk;
	struct pw_sock_drain rec = {};
	struct pw_sock_key key;
	unsigned long ud;
	struct sk_psock *psock;
	struct list_head *first;

	if (!ctx->key || !sk)
		return 0;
	bpf_probe_read_kernel(&key, sizeof(key), ctx->key);
	rec.sip = key.sip;
	rec.dip = key.dip;
	rec.sport = key.sport;
	rec.dport = key.dport;
	ud = (unsigned long)BPF_CORE_READ(sk, sk_user_data) & SK_USER_DATA_PTRMASK;
	psock = (struct sk_psock *)ud;
	if (psock) {
		first = BPF_CORE_READ(psock, ingress_msg.next);
		rec.pending = first != &psock->ingress_msg;
	}
	bpf_seq_write(seq, &rec, sizeof(rec));
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
