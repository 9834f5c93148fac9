// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pw_sk_msg — move each message of an accelerated socket straight into the
 * peer socket (the one keyed by the reversed 4-tuple in pw_sock), or leave it
 * to TCP. Attached to pw_sock (msg_verdict); logic and flow control in
 * pw_sk_msg.h (bpf/fallback/pw_sk_msg.c builds it without kernel reads).
 */
#include "pw_sk_msg.h"

SEC("sk_msg")
int pw_sk_msg(struct sk_msg_md *msg)
{
	return pw_msg_verdict(msg);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
