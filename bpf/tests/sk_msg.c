// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test program of pw_sk_msg.h (test/bpf/sk_msg.test.ts): what pw_sk_msg
 * calls, on a struct sk_msg_md filled by the test; pw_sock is mocked
 * (bpf_msg_redirect_hash records the key and answers from pw_mock), and so
 * is the psock chain read with bpf_probe_read_kernel. The harness also says
 * which flow-control source this object and kernel use, and the kernel's
 * offsets the chain must add. Built as it is (psock where the kernel keeps
 * msg_tot_len) and as sk_msg_no_kernel_read.c (the fallback's read counter).
 * Harness: pw_test.h.
 */
#include "pw_test.h"
#include "pw_sk_msg.h"

#ifndef PW_TEST_MSG_PROG
#define PW_TEST_MSG_PROG test_sk_msg
#endif

/* the offsets test/bpf/logic.ts writes (UAPI) */
_Static_assert(offsetof(struct sk_msg_md, family) == 16 &&
		       offsetof(struct sk_msg_md, remote_port) == 60 &&
		       offsetof(struct sk_msg_md, local_port) == 64 &&
		       offsetof(struct sk_msg_md, size) == 68,
	       "struct sk_msg_md offsets of test/bpf/logic.ts");

static struct sk_msg_md ctx;

/* The verdict, and which flow-control source this object takes on this kernel. */
static __always_inline int pw_test_msg_verdict(struct sk_msg_md *msg)
{
	int ret = pw_msg_verdict(msg);

	if (!PW_NO_KERNEL_READ && bpf_core_field_exists(struct sk_psock___pw, msg_tot_len)) {
		pw_calls.psock_path = 1;
		pw_calls.off_user_data = bpf_core_field_offset(struct sock___pw, sk_user_data);
		pw_calls.off_msg_tot_len = bpf_core_field_offset(struct sk_psock___pw, msg_tot_len);
	}
	return ret;
}

SEC("tc")
int PW_TEST_MSG_PROG(struct __sk_buff *skb)
{
	return PW_TEST_RUN(skb, &ctx, pw_test_msg_verdict(&ctx));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
