/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The verdict of pw_sk_msg (bpf/pw_sk_msg.c, attached to pw_sock as
 * msg_verdict): move each message of an accelerated socket straight into the
 * peer socket (the one keyed by the reversed 4-tuple in pw_sock).
 *
 * A flow is decided at its first message
 * and the decision only ever goes one way, so bytes are never reordered:
 *  - peer in pw_sock at the first message → redirected (BPF_F_INGRESS);
 *  - otherwise → passthrough for good (normal TCP);
 *  - a redirected flow moves to TCP for good when a message reaches
 *    pw_config.bulk_bytes (bulk transfers are faster on TCP, see docs/sockmap.md),
 *    when its peer holds more than PW_QUEUE_MAX_BYTES unread (flow control,
 *    below), or when the agent marks it (namespace disabled, uninstall).
 * Redirect → TCP is safe: the receiver drains its psock queue (earlier,
 * redirected data) before it reads its TCP receive queue.
 *
 * Flow control. A redirected message is queued on the peer's psock with no
 * receive window: a writer faster than its reader would queue until the
 * node's tcp_mem is exhausted and its write() fails with ENOMEM. After each
 * redirect the peer's unread bytes are checked; past the bound the flow
 * moves to TCP, whose window then paces the writer (bound: the limit plus
 * one message). Unread bytes come from, in order of preference:
 *  - the peer psock's msg_tot_len (kernels that keep it, 6.5+ and some
 *    stable series), read through the kernel's sk_msg.sk_redir (CO-RE);
 *  - redirected − read, read counted by bpf/trace/ (fexit) where the
 *    kernel lacks msg_tot_len (5.10, 6.1) and has fentry;
 *  - neither: every redirected byte counts as unread, so a flow moves to
 *    TCP after PW_QUEUE_MAX_BYTES in all (safe, slower; status says so).
 *
 * Maps: pw_sock, pw_flows, pw_sock_read, pw_config (read), pw_flows (write),
 * pw_stats.
 */
#ifndef PW_SK_MSG_H
#define PW_SK_MSG_H

#include "pw_common.h"
#include <bpf/bpf_core_read.h>

/* bpf/fallback/pw_sk_msg.c (and a test) sets it: no bpf_probe_read_kernel in the object at all */
#ifndef PW_NO_KERNEL_READ
#define PW_NO_KERNEL_READ 0
#endif

/* kernel structs (flavoured names: relocated against "sk_msg", "sock" and
 * "sk_psock" of the running kernel's BTF) */
struct sk_msg___pw {
	void *sk_redir;
} __attribute__((preserve_access_index));

struct sock___pw {
	void *sk_user_data;
} __attribute__((preserve_access_index));

struct sk_psock___pw {
	__u32 msg_tot_len;
} __attribute__((preserve_access_index));

/* low bits of sk_user_data are flags (NOCOPY, BPF, PSOCK); pointers are 8-aligned */
#define PW_USER_DATA_PTRMASK (~7UL)

/* Unread bytes queued on the peer this message was just redirected to. */
static __always_inline __u64 pw_peer_unread(struct sk_msg_md *msg, const struct pw_flow *f,
					    const struct pw_sock_key *peer)
{
	if (!PW_NO_KERNEL_READ && bpf_core_field_exists(struct sk_psock___pw, msg_tot_len)) {
		/* the context is the kernel's struct sk_msg; the helper just set sk_redir */
		unsigned long sk = 0, ud = 0;
		__u32 len = 0;

		bpf_probe_read_kernel(&sk, sizeof(sk),
				      (void *)msg +
					      bpf_core_field_offset(struct sk_msg___pw, sk_redir));
		if (!sk)
			return 0;
		bpf_probe_read_kernel(
			&ud, sizeof(ud),
			(void *)(sk + bpf_core_field_offset(struct sock___pw, sk_user_data)));
		ud &= PW_USER_DATA_PTRMASK;
		if (!ud)
			return 0;
		bpf_probe_read_kernel(
			&len, sizeof(len),
			(void *)(ud + bpf_core_field_offset(struct sk_psock___pw, msg_tot_len)));
		return len;
	} else {
		/* a read can be counted before the redirect that queued it: clamp at 0 */
		struct pw_read *r = bpf_map_lookup_elem(&pw_sock_read, peer);
		__u64 rd = r ? r->bytes : 0;
		__u64 sent = f ? f->bytes : 0;

		return sent > rd ? sent - rd : 0;
	}
}

static __always_inline int pw_msg_verdict(struct sk_msg_md *msg)
{
	struct pw_sock_key self = {}, peer = {};
	struct pw_config *cfg = pw_cfg();
	struct pw_flow *f;
	__u32 size = msg->size;

	if (!PW_SOCK_KEY(msg, &self))
		return SK_PASS;
	peer.sip = self.dip;
	peer.dip = self.sip;
	peer.sport = self.dport;
	peer.dport = self.sport;

	f = bpf_map_lookup_elem(&pw_flows, &self);
	if (f && (f->flags & PW_FLOW_PASSTHROUGH)) {
		pw_count(PW_MSG_PASSTHROUGH, size);
		return SK_PASS;
	}
	if (!cfg || !(cfg->flags & PW_CONFIG_SOCKMAP_ON)) {
		struct pw_flow off = { .flags = PW_FLOW_PASSTHROUGH };

		bpf_map_update_elem(&pw_flows, &self, &off, BPF_ANY);
		pw_count(PW_MSG_TO_TCP_OFF, size);
		return SK_PASS;
	}
	if (f && cfg->bulk_bytes && size >= cfg->bulk_bytes) {
		/* plain store: every writer only ever sets this bit (atomic OR needs 5.12) */
		f->flags |= PW_FLOW_PASSTHROUGH;
		pw_count(PW_MSG_TO_TCP_BULK, size);
		return SK_PASS;
	}
	if (bpf_msg_redirect_hash(msg, &pw_sock, &peer, BPF_F_INGRESS) == SK_PASS) {
		/* this message goes (the verdict is taken); the next ones go to TCP
		 * if the peer already holds more than the bound */
		int over = pw_peer_unread(msg, f, &peer) + size > PW_QUEUE_MAX_BYTES;

		if (f) {
			f->bytes += size;
			if (over)
				f->flags |= PW_FLOW_PASSTHROUGH;
		} else {
			struct pw_flow init = { .bytes = size,
						.flags = over ? PW_FLOW_PASSTHROUGH : 0 };

			bpf_map_update_elem(&pw_flows, &self, &init, BPF_NOEXIST);
		}
		pw_count(over ? PW_MSG_TO_TCP_QUEUE : PW_MSG_REDIRECTED, size);
		return SK_PASS;
	}
	/* no peer in pw_sock (at the first message, or it left): TCP for good */
	if (f) {
		f->flags |= PW_FLOW_PASSTHROUGH;
		pw_count(PW_MSG_PASSTHROUGH, size);
	} else {
		struct pw_flow tcp = { .flags = PW_FLOW_PASSTHROUGH };

		bpf_map_update_elem(&pw_flows, &self, &tcp, BPF_NOEXIST);
		pw_count(PW_MSG_NO_PEER, size);
		/* sk_msg may not delete from a sockhash: the agent takes such
		 * sockets out (drainPassthrough), off the slower tcp_bpf path */
	}
	return SK_PASS;
}

#endif
