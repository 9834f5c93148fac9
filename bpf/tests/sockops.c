// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test program of pw_sockops.h (test/bpf/sockops.test.ts): what pw_sockops
 * calls, on a struct bpf_sock_ops filled by the test; pw_sock itself is
 * mocked (bpf_sock_hash_update, bpf_sock_ops_cb_flags_set record their
 * arguments). Harness: pw_test.h.
 */
#include "pw_test.h"
#include "pw_sockops.h"

/* the offsets test/bpf/logic.ts writes (UAPI) */
_Static_assert(offsetof(struct bpf_sock_ops, args) == 4 &&
		       offsetof(struct bpf_sock_ops, family) == 20 &&
		       offsetof(struct bpf_sock_ops, remote_port) == 64 &&
		       offsetof(struct bpf_sock_ops, local_port) == 68 &&
		       offsetof(struct bpf_sock_ops, bpf_sock_ops_cb_flags) == 84 &&
		       offsetof(struct bpf_sock_ops, sk) == 184,
	       "struct bpf_sock_ops offsets of test/bpf/logic.ts");

static struct bpf_sock_ops ctx;

SEC("tc")
int test_sockops(struct __sk_buff *skb)
{
	return PW_TEST_RUN(skb, &ctx, pw_sockops_run(&ctx));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
