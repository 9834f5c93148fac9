// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pw_proxy_peer4 — getpeername() of an app socket that pw_proxy_conn4 sent to
 * the sidecar proxy returns the address the app dialled, as it does under
 * Istio's iptables REDIRECT (not the proxy's 127.128.x.y:<proxy_port>).
 *
 * Attached (multi) to the cgroup of each enabled pod that has a sidecar, with
 * the capture (PW_HOOK_CONNECT4). Maps: pw_config, pw_odst_tuple (read), pw_stats.
 */
#include "pw_proxy.h"

SEC("cgroup/getpeername4")
int pw_proxy_peer4(struct bpf_sock_addr *ctx)
{
	return pw_proxy_getpeername4(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
