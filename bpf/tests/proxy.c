// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test programs of pw_proxy.h (test/bpf/proxy.test.ts): one per production
 * entry (pw_proxy_conn4/6, pw_proxy_peer4/6), each calling the function it
 * calls. Context: pw_test_sock_addr.h; harness: pw_test.h.
 */
#include "pw_test_sock_addr.h"
#include "pw_proxy.h"

static struct pw_test_sock_addr ctx;

SEC("tc")
int test_proxy_conn4(struct __sk_buff *skb)
{
	return PW_TEST_RUN(skb, &ctx, pw_proxy_connect4(&ctx));
}

SEC("tc")
int test_proxy_conn6(struct __sk_buff *skb)
{
	return PW_TEST_RUN(skb, &ctx, pw_proxy_connect6(&ctx));
}

SEC("tc")
int test_proxy_peer4(struct __sk_buff *skb)
{
	return PW_TEST_RUN(skb, &ctx, pw_proxy_getpeername4(&ctx));
}

SEC("tc")
int test_proxy_peer6(struct __sk_buff *skb)
{
	return PW_TEST_RUN(skb, &ctx, pw_proxy_getpeername6(&ctx));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
