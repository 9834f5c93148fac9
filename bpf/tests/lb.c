// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test programs of pw_lb.h (test/bpf/lb.test.ts): one per production entry,
 * each calling the function its pw_lb_*.c calls, with the same constants.
 * Context: pw_test_sock_addr.h; harness: pw_test.h.
 */
#include "pw_test_sock_addr.h"
#include "pw_lb.h"

static struct pw_test_sock_addr ctx;

SEC("tc")
int test_lb_conn4(struct __sk_buff *skb)
{
	return PW_TEST_RUN(skb, &ctx, pw_lb_translate(&ctx, PW_LB_V4, 1));
}

SEC("tc")
int test_lb_conn6(struct __sk_buff *skb)
{
	return PW_TEST_RUN(skb, &ctx, pw_lb_translate(&ctx, PW_LB_V6, 1));
}

SEC("tc")
int test_lb_send4(struct __sk_buff *skb)
{
	return PW_TEST_RUN(skb, &ctx, pw_lb_translate(&ctx, PW_LB_V4, 0));
}

/* pw_lb_recv4 and pw_lb_peer4 */
SEC("tc")
int test_lb_reverse4(struct __sk_buff *skb)
{
	return PW_TEST_RUN(skb, &ctx, pw_lb_reverse(&ctx, PW_LB_V4));
}

/* pw_lb_recv6 and pw_lb_peer6 */
SEC("tc")
int test_lb_reverse6(struct __sk_buff *skb)
{
	return PW_TEST_RUN(skb, &ctx, pw_lb_reverse(&ctx, PW_LB_V6));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
