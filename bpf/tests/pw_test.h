/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Harness of the BPF unit tests of the socket programs' logic (test/bpf/).
 *
 * The kernel cannot test-run sock_addr, sock_ops or sk_msg programs
 * (BPF_PROG_TEST_RUN answers ENOTSUPP), so each test program under bpf/tests/
 * is a tc program, which it can run, that calls the decision function of a
 * logic header (pw_lb.h, pw_proxy.h, pw_sockops.h, pw_sk_msg.h) with
 *  - a fake context: a global of the program type's context struct (or, for
 *    sock_addr, a struct with the same fields, see lb.c), filled from the
 *    test's input and written back after the call;
 *  - the helpers that need a real socket, process or clock replaced by the
 *    mocks below (macros defined after libbpf's declarations, before the
 *    logic header): they answer from pw_mock, the test's input, and record
 *    what they were asked in pw_calls, part of the output.
 * Everything else is real: the schema's maps (pw_maps.h, shared with the test
 * through their pins), bpf_map_* helpers, CO-RE relocations, the verifier.
 *
 * The test packet (test/bpf/logic.ts runLogic):
 *   [0, 16)              a pseudo Ethernet header, ethertype PW_TEST_ETHERTYPE
 *   [16, 192)            struct pw_mock: the mocks' answers (input)
 *   [192, 296)           struct pw_calls: what the mocks were asked (output)
 *   [296, 296 + size)    the context: input, then the context after the call
 * The program's return value is the decision function's, PW_TEST_BAD_INPUT
 * when the packet is too short.
 */
#ifndef PW_TEST_H
#define PW_TEST_H

#include "pw_common.h"
#include <stddef.h>

#define PW_TEST_OFF_MOCK 16
#define PW_TEST_OFF_CALLS 192
#define PW_TEST_OFF_CTX 296
#define PW_TEST_CTX_MAX 512
#define PW_TEST_BAD_INPUT 0xbad

#define PW_MOCK_LEVELS 13 /* bpf_get_current_ancestor_cgroup_id levels 0..12 */

struct pw_mock {
	__u64 now;		      /* bpf_ktime_get_ns */
	__u64 cookie;		      /* bpf_get_socket_cookie */
	__u64 netns;		      /* bpf_get_netns_cookie */
	__u64 uid_gid;		      /* bpf_get_current_uid_gid: gid << 32 | uid */
	__u64 cgroup[PW_MOCK_LEVELS]; /* bpf_get_current_ancestor_cgroup_id(level) */
	__u64 sk_redir;		      /* bpf_probe_read_kernel, 1st read: sk_msg.sk_redir */
	__u64 sk_user_data;	      /* 2nd read: sock.sk_user_data (low bits: flags) */
	__s64 hash_update_ret;	      /* bpf_sock_hash_update's answer (0, -EEXIST, …) */
	__u32 prandom;		      /* bpf_get_prandom_u32 */
	/* bpf_msg_redirect_hash: 1 the key is in pw_sock (SK_PASS), 0 it is not (SK_DROP) */
	__u32 peer_in_sock;
	__u32 msg_tot_len; /* 3rd read: sk_psock.msg_tot_len */
	/* bpf_sk_storage_get: the socket's pw_revnat_sk, 0 none, else 1 + its watched */
	__u32 sk_storage;
};
_Static_assert(sizeof(struct pw_mock) == PW_TEST_OFF_CALLS - PW_TEST_OFF_MOCK, "pw_mock layout");
_Static_assert(offsetof(struct pw_mock, sk_redir) == 136, "pw_mock layout");
_Static_assert(offsetof(struct pw_mock, prandom) == 160, "pw_mock layout");

struct pw_calls {
	__u32 prandom;	   /* bpf_get_prandom_u32 calls */
	__u32 hash_update; /* bpf_sock_hash_update calls, the last one's flags and key */
	__u64 hash_update_flags;
	struct pw_sock_key hash_update_key;
	__u32 cb_flags_set; /* bpf_sock_ops_cb_flags_set calls, the last one's flags */
	__u32 cb_flags;
	__u32 redirect; /* bpf_msg_redirect_hash calls, the last one's flags and key */
	__u64 redirect_flags;
	struct pw_sock_key redirect_key;
	__u32 reads; /* bpf_probe_read_kernel calls */
	/* the address of each read from the 2nd on (the 1st reads the context) */
	__u64 read_addr[3];
	__u32 psock_path;      /* sk_msg: unread bytes come from the psock (kernel reads) */
	__u32 off_user_data;   /* sk_msg: offsetof(struct sock, sk_user_data) in this kernel */
	__u32 off_msg_tot_len; /* sk_msg: offsetof(struct sk_psock, msg_tot_len) in this kernel */
	__u32 sk_storage;      /* the socket's pw_revnat_sk after the call, as pw_mock.sk_storage */
};
_Static_assert(sizeof(struct pw_calls) == PW_TEST_OFF_CTX - PW_TEST_OFF_CALLS, "pw_calls layout");
_Static_assert(offsetof(struct pw_calls, redirect_key) == 48, "pw_calls layout");
_Static_assert(offsetof(struct pw_calls, read_addr) == 64, "pw_calls layout");

static struct pw_mock pw_mock;
static struct pw_calls pw_calls;

/* ---- the mocks ---- */

static __always_inline __u64 pw_mock_ktime_get_ns(void)
{
	return pw_mock.now;
}

static __always_inline __u32 pw_mock_get_prandom_u32(void)
{
	pw_calls.prandom++;
	return pw_mock.prandom;
}

static __always_inline __u64 pw_mock_get_socket_cookie(void *ctx)
{
	return pw_mock.cookie;
}

static __always_inline __u64 pw_mock_get_netns_cookie(void *ctx)
{
	return pw_mock.netns;
}

static __always_inline __u64 pw_mock_get_current_uid_gid(void)
{
	return pw_mock.uid_gid;
}

/* level 0 is the root; 0 past the process's own cgroup, as the helper answers */
static __always_inline __u64 pw_mock_get_current_ancestor_cgroup_id(int level)
{
	if (level < 0 || level >= PW_MOCK_LEVELS)
		return 0;
	return pw_mock.cgroup[level];
}

static __always_inline void pw_mock_copy_key(struct pw_sock_key *to, const void *key)
{
	__builtin_memcpy(to, key, sizeof(*to));
}

static __always_inline long pw_mock_sock_hash_update(void *skops, void *map, void *key, __u64 flags)
{
	pw_calls.hash_update++;
	pw_calls.hash_update_flags = flags;
	pw_mock_copy_key(&pw_calls.hash_update_key, key);
	return pw_mock.hash_update_ret;
}

static __always_inline long pw_mock_sock_ops_cb_flags_set(void *skops, int flags)
{
	pw_calls.cb_flags_set++;
	pw_calls.cb_flags = flags;
	return 0;
}

static __always_inline long pw_mock_msg_redirect_hash(void *msg, void *map, void *key, __u64 flags)
{
	pw_calls.redirect++;
	pw_calls.redirect_flags = flags;
	pw_mock_copy_key(&pw_calls.redirect_key, key);
	return pw_mock.peer_in_sock ? SK_PASS : SK_DROP;
}

/* The psock chain of pw_sk_msg.h pw_peer_unread: sk_redir, then sk_user_data, then msg_tot_len. */
static __always_inline long pw_mock_probe_read_kernel(void *dst, __u32 size, const void *src)
{
	__u32 n = pw_calls.reads++;
	__u64 v = n == 0 ? pw_mock.sk_redir : n == 1 ? pw_mock.sk_user_data : pw_mock.msg_tot_len;

	if (n == 1)
		pw_calls.read_addr[1] = (__u64)src;
	else if (n == 2)
		pw_calls.read_addr[2] = (__u64)src;
	if (size == sizeof(__u64))
		*(__u64 *)dst = v;
	else if (size == sizeof(__u32))
		*(__u32 *)dst = (__u32)v;
	else
		return -EINVAL;
	return 0;
}

/* Socket storage of the one socket of a run: present or not, and its value. */
static struct pw_revnat_sk pw_mock_sk;
static __u32 pw_mock_sk_present;

static __always_inline void *pw_mock_sk_storage_get(void *map, void *sk, void *value, __u64 flags)
{
	if (!pw_mock_sk_present) {
		if (!(flags & BPF_SK_STORAGE_GET_F_CREATE))
			return 0;
		pw_mock_sk_present = 1;
		pw_mock_sk.watched = 0;
	}
	return &pw_mock_sk;
}

#define bpf_ktime_get_ns pw_mock_ktime_get_ns
#define bpf_get_prandom_u32 pw_mock_get_prandom_u32
#define bpf_get_socket_cookie pw_mock_get_socket_cookie
#define bpf_get_netns_cookie pw_mock_get_netns_cookie
#define bpf_get_current_uid_gid pw_mock_get_current_uid_gid
#define bpf_get_current_ancestor_cgroup_id pw_mock_get_current_ancestor_cgroup_id
#define bpf_sock_hash_update pw_mock_sock_hash_update
#define bpf_sock_ops_cb_flags_set pw_mock_sock_ops_cb_flags_set
#define bpf_msg_redirect_hash pw_mock_msg_redirect_hash
#define bpf_probe_read_kernel pw_mock_probe_read_kernel
#define bpf_sk_storage_get pw_mock_sk_storage_get

/* ---- input and output ---- */

/* Reads the mocks' answers and the context from the packet; clears the calls. */
static __always_inline int pw_test_begin(struct __sk_buff *skb, void *ctx, __u32 size)
{
	__builtin_memset(&pw_calls, 0, sizeof(pw_calls));
	if (bpf_skb_load_bytes(skb, PW_TEST_OFF_MOCK, &pw_mock, sizeof(pw_mock)))
		return -1;
	pw_mock_sk_present = pw_mock.sk_storage != 0;
	pw_mock_sk.watched = pw_mock.sk_storage ? pw_mock.sk_storage - 1 : 0;
	return bpf_skb_load_bytes(skb, PW_TEST_OFF_CTX, ctx, size) ? -1 : 0;
}

/* Writes the calls and the context after the call into the packet. */
static __always_inline int pw_test_end(struct __sk_buff *skb, void *ctx, __u32 size)
{
	pw_calls.sk_storage = pw_mock_sk_present ? 1 + pw_mock_sk.watched : 0;
	if (bpf_skb_store_bytes(skb, PW_TEST_OFF_CALLS, &pw_calls, sizeof(pw_calls), 0))
		return -1;
	return bpf_skb_store_bytes(skb, PW_TEST_OFF_CTX, ctx, size, 0) ? -1 : 0;
}

/* A test program: input, the call (its value is the program's), output. */
#define PW_TEST_RUN(skb, ctx, call)                                                                \
	({                                                                                         \
		_Static_assert(sizeof(*(ctx)) <= PW_TEST_CTX_MAX, "context too large");            \
		int __ret = PW_TEST_BAD_INPUT;                                                     \
		if (pw_test_begin(skb, ctx, sizeof(*(ctx))) == 0) {                                \
			__ret = (call);                                                            \
			if (pw_test_end(skb, ctx, sizeof(*(ctx))))                                 \
				__ret = PW_TEST_BAD_INPUT;                                         \
		}                                                                                  \
		__ret;                                                                             \
	})

#endif
