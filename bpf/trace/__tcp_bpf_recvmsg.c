// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* pw_read_acct on 5.10 (net/ipv4/tcp_bpf.c __tcp_bpf_recvmsg). See pw_read.h. */
#include "pw_read.h"

SEC("fexit/__tcp_bpf_recvmsg")
int pw_read_acct(unsigned long long *ctx)
{
	PW_READ_ACCT_BODY(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
