// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pw_proxy_conn6 — the same capture as pw_proxy_conn4 for dual-stack
 * (AF_INET6) sockets dialling an IPv4 address as ::ffff:a.b.c.d (Java, .NET
 * and others do): such a connect() runs the INET6 hook, not connect4, and
 * would bypass the sidecar. It is rewritten to ::ffff:127.128.x.y:<proxy_port>;
 * the socket stays AF_INET6, talks IPv4 on the wire, and pw_sockops keys it
 * by its IPv4 4-tuple like any other, so the proxy's SO_ORIGINAL_DST
 * (pw_proxy_odst) answers for it too.
 * Pure IPv6 destinations are left alone (podwarp is IPv4-only; Istio's
 * ip6tables capture, if any, applies).
 *
 * Attached (multi) to the cgroup of each enabled pod that has a sidecar, with
 * pw_proxy_conn4 (the same PW_HOOK_CONNECT4 bit).
 * Maps: pw_config (read), pw_pod_cgroup (read), pw_odst_cookie (write), pw_stats.
 */
#include "pw_proxy.h"

SEC("cgroup/connect6")
int pw_proxy_conn6(struct bpf_sock_addr *ctx)
{
	return pw_proxy_connect6(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
