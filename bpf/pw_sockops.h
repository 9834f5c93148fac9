/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Which established TCP sockets enter pw_sock, and under which key: the logic
 * of pw_sockops (bpf/pw_sockops.c). A socket enters pw_sock when
 *  - both ends are enabled local endpoints (pod↔pod on this node), or
 *  - it is one end of an app↔proxy connection that pw_proxy_conn4 sent to
 *    127.128.0.0/10:<proxy_port> (sidecar acceleration).
 * Keys are 4-tuples as seen from the socket (PW_SOCK_KEY: local first);
 * BPF_NOEXIST: a colliding key is never overwritten (the socket just stays
 * on TCP). At close, the socket's flow state goes.
 *
 * A connection pw_lb translated to a backend (its entry in pw_revnat) is
 * watched to its close, where that entry is deleted: pw_revnat then holds
 * the node's live TCP translations and its recent UDP ones, and its LRU
 * eviction reaches a live connection only when more are open than it holds.
 *
 * Such an eviction is what an application notices (getpeername() shows the
 * backend), so it is counted: revnat_evicted, a watched connection whose
 * entry is gone at its close. "Watched" needs a marker that outlives no
 * socket and that nothing evicts: socket storage (pw_revnat_sk,
 * BPF_MAP_TYPE_SK_STORAGE, sock_ops may use it from 5.10, the same kernel
 * that gave bpf_sock_ops its sk field). The close callback flag alone cannot
 * say it (a pw_sock socket asks for it too, and another program in a parent
 * cgroup may set it), an LRU keyed by cookie could itself be evicted, and
 * the storage goes with the socket, so a recycled cookie finds none. The
 * mark is cleared at close: a socket connect()ed again after a close starts
 * unmarked.
 *
 * Maps: pw_sock (write), pw_endpoints, pw_config, pw_odst_cookie (read),
 * pw_odst_tuple (write), pw_flows and pw_sock_read (delete at close),
 * pw_revnat (read when established, delete at close), pw_revnat_sk (mark
 * when established, read and clear at close), pw_stats.
 */
#ifndef PW_SOCKOPS_H
#define PW_SOCKOPS_H

#include "pw_common.h"

#define TCP_CLOSE 7

static __always_inline int pw_sockops_run(struct bpf_sock_ops *skops)
{
	struct pw_sock_key k = {};
	struct pw_config *cfg;
	int proxy_side = 0;
	__u32 op = skops->op;

	if (!PW_SOCK_KEY(skops, &k))
		return 1; /* IPv6 proper: not accelerated */

	if (op == BPF_SOCK_OPS_STATE_CB) {
		if (skops->args[1] == TCP_CLOSE) {
			/* a connection to a Service: its reverse translation goes with it */
			struct pw_revnat_key rk = { .cookie = bpf_get_socket_cookie(skops),
						    .ip = k.dip,
						    .port = k.dport };
			struct bpf_sock *sk = skops->sk;
			struct pw_revnat_sk *mark =
				sk ? bpf_sk_storage_get(&pw_revnat_sk, sk, 0, 0) : 0;

			if (bpf_map_delete_elem(&pw_revnat, &rk) == 0)
				pw_count(PW_SOCKOPS_REVNAT_CLOSED, 0);
			else if (mark && mark->watched)
				/* translated, and its entry evicted while it was open */
				pw_count(PW_SOCKOPS_REVNAT_EVICTED, 0);
			if (mark)
				mark->watched = 0;
			bpf_map_delete_elem(&pw_sock_read, &k);
			if (bpf_map_delete_elem(&pw_flows, &k) == 0)
				pw_count(PW_SOCKOPS_CLOSED, 0);
		}
		return 1;
	}
	if (op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;

	if (op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) {
		/* connect() was translated to this backend (pw_lb): be told at close, so
		 * that pw_revnat holds live connections only, not the LRU's history */
		struct pw_revnat_key rk = { .cookie = bpf_get_socket_cookie(skops),
					    .ip = k.dip,
					    .port = k.dport };

		if (bpf_map_lookup_elem(&pw_revnat, &rk)) {
			struct bpf_sock *sk = skops->sk;
			struct pw_revnat_sk *mark =
				sk ? bpf_sk_storage_get(&pw_revnat_sk, sk, 0,
							BPF_SK_STORAGE_GET_F_CREATE)
				   : 0;

			if (mark)
				mark->watched = 1;
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
								 BPF_SOCK_OPS_STATE_CB_FLAG);
			pw_count(PW_SOCKOPS_REVNAT_WATCH, 0);
		}
	}

	cfg = pw_cfg();
	if (cfg && cfg->proxy_port) {
		__be16 pp = bpf_htons(cfg->proxy_port);

		if ((pw_is_proxy_addr(k.dip) && k.dport == pp) ||
		    (pw_is_proxy_addr(k.sip) && k.sport == pp))
			proxy_side = 1;
	}
	if (!proxy_side && !(pw_endpoint_enabled(k.sip) && pw_endpoint_enabled(k.dip))) {
		pw_count(PW_SOCKOPS_NOT_LOCAL, 0);
		return 1;
	}

	if (proxy_side && op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) {
		/* the app's socket: key its original destination by 4-tuple for getsockopt */
		__u64 cookie = bpf_get_socket_cookie(skops);
		struct pw_odst *o = bpf_map_lookup_elem(&pw_odst_cookie, &cookie);

		if (o) {
			struct pw_odst copy = *o;

			if (bpf_map_update_elem(&pw_odst_tuple, &k, &copy, BPF_ANY) == 0)
				pw_count(PW_SOCKOPS_ODST_SAVED, 0);
			bpf_map_delete_elem(&pw_odst_cookie, &cookie);
		}
	}

	/* a new connection never inherits the state of an old one with the same 4-tuple */
	bpf_map_delete_elem(&pw_flows, &k);
	bpf_map_delete_elem(&pw_sock_read, &k);
	long err = bpf_sock_hash_update(skops, &pw_sock, &k, BPF_NOEXIST);
	if (err == 0) {
		/* be told at close, to drop the flow state */
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
							 BPF_SOCK_OPS_STATE_CB_FLAG);
		pw_count(proxy_side ? PW_SOCKOPS_ADDED_PROXY : PW_SOCKOPS_ADDED_POD, 0);
	} else if (err == -EEXIST) {
		pw_count(PW_SOCKOPS_EXISTS, 0);
	} else {
		pw_count(PW_SOCKOPS_ADD_FAILED, 0);
	}
	return 1;
}

#endif
