// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pw_proxy_conn4 — send an app's outbound TCP connect() to its sidecar proxy
 * (Istio-compatible: proxy uid/gid 1337, outbound port 15001), without iptables.
 *
 * Attached (multi) to the cgroup of each enabled pod that has a sidecar. The
 * original destination is saved by socket cookie (pw_odst_cookie) and the
 * connect() rewritten to 127.128.0.0/10:<proxy_port>, one loopback address
 * per connection (from the cookie), so the app↔proxy 4-tuple is unique on
 * the node and the proxy (listening on 0.0.0.0:<proxy_port>) accepts it.
 * What is left alone, and why: bpf/pw_proxy.h.
 *
 * Maps: pw_config (read), pw_pod_cgroup (read), pw_odst_cookie (write), pw_stats.
 */
#include "pw_proxy.h"

SEC("cgroup/connect4")
int pw_proxy_conn4(struct bpf_sock_addr *ctx)
{
	return pw_proxy_connect4(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
