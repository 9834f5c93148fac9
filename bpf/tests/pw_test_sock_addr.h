/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The fake context of the sock_addr test programs (lb.c, proxy.c): struct
 * bpf_sock_addr's fields at their UAPI offsets, with the socket (ctx->sk)
 * embedded at PW_TEST_SA_SK instead of behind a pointer, so that the fake
 * context can hold it (a pointer loaded from memory is no pointer to the
 * verifier). Include after pw_test.h, before the logic header.
 */
#ifndef PW_TEST_SOCK_ADDR_H
#define PW_TEST_SOCK_ADDR_H

#include "pw_test.h"

struct pw_test_sock_addr {
	__u32 user_family;
	__u32 user_ip4;
	__u32 user_ip6[4];
	__u32 user_port;
	__u32 family;
	__u32 type;
	__u32 protocol;
	__u32 msg_src_ip4;
	__u32 msg_src_ip6[4];
	__u32 _pad0; /* sk at its UAPI offset */
	/* ctx->sk: state, dst_ip4 (pw_lb.h), src_ip4, src_port (pw_proxy.h) */
	struct bpf_sock sk[1];
};
#define PW_TEST_SA_SK 64
_Static_assert(offsetof(struct pw_test_sock_addr, protocol) ==
		       offsetof(struct bpf_sock_addr, protocol),
	       "UAPI offsets");
_Static_assert(offsetof(struct pw_test_sock_addr, msg_src_ip6) ==
		       offsetof(struct bpf_sock_addr, msg_src_ip6),
	       "UAPI offsets");
_Static_assert(offsetof(struct pw_test_sock_addr, sk) == offsetof(struct bpf_sock_addr, sk),
	       "UAPI offsets");
_Static_assert(offsetof(struct pw_test_sock_addr, sk) == PW_TEST_SA_SK, "layout");

/* the logic sees this struct wherever it says struct bpf_sock_addr */
#define bpf_sock_addr pw_test_sock_addr

#endif
