// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sk_msg.c built as bpf/fallback/pw_sk_msg.c builds pw_sk_msg: without
 * kernel reads, unread bytes = redirected (pw_flows) − read (pw_sock_read).
 */
#define PW_NO_KERNEL_READ 1
#define PW_TEST_MSG_PROG test_sk_msg_no_kernel_read
#include "sk_msg.c"
