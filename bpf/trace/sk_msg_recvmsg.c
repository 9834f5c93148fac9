// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* pw_read_acct on kernels ≥ 5.11 (net/core/skmsg.c sk_msg_recvmsg). See pw_read.h. */
#include "pw_read.h"

SEC("fexit/sk_msg_recvmsg")
int pw_read_acct(unsigned long long *ctx)
{
	PW_READ_ACCT_BODY(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
