/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Helpers shared by podwarp's programs. Map layouts: build/include/pw_maps.h. */
#ifndef PW_COMMON_H
#define PW_COMMON_H

#include "pw_maps.h"
#include <bpf/bpf_endian.h>

/* Count one event of `reason` (a PW_<PROG>_<REASON> slot) with `bytes`. */
static __always_inline void pw_count(__u32 reason, __u64 bytes)
{
	struct pw_counter *c = bpf_map_lookup_elem(&pw_stats, &reason);

	if (c) { /* per-CPU slot: plain increments are safe */
		c->packets++;
		c->bytes += bytes;
	}
}

static __always_inline struct pw_config *pw_cfg(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&pw_config, &zero);
}

/* Sidecar redirects go to 127.128.0.0/10: one address per connection, so
 * app↔proxy 4-tuples are unique on the node even across pods. */
#define PW_PROXY_NET 0x7f800000u
#define PW_PROXY_MASK 0xffc00000u

static __always_inline int pw_is_proxy_addr(__be32 ip)
{
	return (bpf_ntohl(ip) & PW_PROXY_MASK) == PW_PROXY_NET;
}

static __always_inline int pw_endpoint_enabled(__be32 ip)
{
	struct pw_ep_key k = { .ip = ip };
	struct pw_endpoint *e = bpf_map_lookup_elem(&pw_endpoints, &k);

	return e && (e->flags & PW_EP_ENABLED);
}

#endif
