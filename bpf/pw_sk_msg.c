// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pw_sk_msg — move each message of an accelerated socket straight into the
 * peer socket (the one keyed by the reversed 4-tuple in pw_sock).
 *
 * Attached to pw_sock (msg_verdict). A flow is decided at its first message
 * and the decision only ever goes one way, so bytes are never reordered:
 *  - peer in pw_sock at the first message → redirected (BPF_F_INGRESS);
 *  - otherwise → passthrough for good (normal TCP);
 *  - a redirected flow moves to TCP for good when a message reaches
 *    pw_config.bulk_bytes (bulk transfers are faster on TCP, see README), or
 *    when the agent marks it (namespace disabled, uninstall).
 * Redirect → TCP is safe: the receiver drains its psock queue (earlier,
 * redirected data) before it reads its TCP receive queue.
 *
 * Maps: pw_sock, pw_flows, pw_config (read), pw_flows (write), pw_stats.
 */
#include "pw_common.h"

SEC("sk_msg")
int pw_sk_msg(struct sk_msg_md *msg)
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
		if (f) {
			f->bytes += size;
		} else {
			struct pw_flow init = { .bytes = size };

			bpf_map_update_elem(&pw_flows, &self, &init, BPF_NOEXIST);
		}
		pw_count(PW_MSG_REDIRECTED, size);
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

char LICENSE[] SEC("license") = "Dual BSD/GPL";
