// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pw_tc_egress — pod egress fast path.
 *
 * Attached to tc ingress of the host side of every local pod's veth, so it
 * sees each frame the pod sends. If both the source and the destination are
 * enabled local endpoints (pw_endpoints), the frame is handed straight to the
 * destination pod with bpf_redirect_peer (5.10+): no host routing, no bridge,
 * no netfilter on the host. Everything else returns TC_ACT_OK untouched.
 *
 * Wiring styles:
 *  - routed (kindnet/ptp): the pod addresses its frames to the gateway MAC; we
 *    act as the router would: TTL-1 with checksum update, source MAC = the
 *    destination pod's gateway MAC, destination MAC = the pod's MAC.
 *  - bridge (docker0/cni0): pods on one L2 segment address each other's MAC
 *    directly; a switched frame is passed on unchanged (no TTL change).
 *
 * Maps: pw_endpoints (read), pw_ct and pw_udp_ct (flow tracking), pw_stats
 * (write). Layouts: build/include/pw_maps.h, generated from abi/schema.ts.
 */
#include "pw_common.h"
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#define count(reason, skb) pw_count(reason, (skb)->len)

#define PW_IP_MF 0x2000
#define PW_IP_OFFSET 0x1fff

/*
 * UDP flow tracking (pw_udp_ct). UDP has no SYN: the first packet this
 * program sees from pod S to pod D, addressed to D's own IP, may be a request
 * S opens, or S's answer to a flow D opened through a ClusterIP (or
 * externalIP, NodePort, …) that kube-proxy DNATed to S. The answer needs the
 * host's reverse NAT (source back to the ClusterIP), and nothing at S's veth
 * tells the two apart. So the first packets never skip the host:
 *
 *  - a packet S:s → D:d of no live entry either way creates (S:s → D:d,
 *    OPENED) and takes the normal path (udp_not_tracked);
 *  - more packets of the opener while OPENED: normal path, entry refreshed;
 *  - a packet D:d → S:s addressed to S's IP directly, leaving D, while
 *    (S:s → D:d) is live: both pods address each other directly, no NAT on
 *    either side: ANSWERED, redirected, and so is every later packet of
 *    either direction while the entry is live.
 *
 * In the NATed case D only ever sends to the ClusterIP (not_local here), so
 * the entry S's answers create stays OPENED and they all take the normal
 * path, where conntrack undoes the DNAT. The same holds when D's first
 * packets went out before its tc program was attached, and for every flow
 * podwarp leaves to kube-proxy (terminating-only Services, externalIPs,
 * LoadBalancer, NodePort, dual-stack sockets). A flow through the socket LB
 * is direct on the wire (pw_lb_* rewrote the destination at connect()):
 * tracked and redirected like any other.
 *
 * Entries idle longer than conntrack's UDP timeouts (30 s opened, 120 s
 * answered) no longer count, so a 4-tuple reused later by a NATed flow finds
 * no stale ANSWERED entry once the old flow has been quiet that long; the
 * flow starts over. LRU evicts the oldest when full.
 * Fragments (MF or offset set) never skip the host: the host reassembles
 * (nf_defrag) and would wait for a fragment redirected past it.
 */
/* A flow's key in this packet's direction (fk) and in the other (rk). */
static __always_inline void ct_keys(const struct iphdr *ip, __be16 sport, __be16 dport,
				    struct pw_ct_key *fk, struct pw_ct_key *rk)
{
	fk->saddr = ip->saddr;
	fk->daddr = ip->daddr;
	fk->sport = sport;
	fk->dport = dport;
	rk->saddr = ip->daddr;
	rk->daddr = ip->saddr;
	rk->sport = dport;
	rk->dport = sport;
}

static __always_inline int udp_ct_live(const struct pw_udp_ct *e, __u64 now)
{
	__u64 ttl = e->state == PW_UDP_CT_ANSWERED ? PW_UDP_CT_TIMEOUT_ANSWERED_NS
						   : PW_UDP_CT_TIMEOUT_OPENED_NS;

	return now - e->last_ns < ttl;
}

/* 1: redirect; 0: normal path (counted udp_not_tracked by the caller). */
static __always_inline int udp_ct_track(struct iphdr *ip, void *data_end)
{
	struct udphdr *udp = (void *)ip + ip->ihl * 4;
	struct pw_ct_key fk = {}, rk = {};
	struct pw_udp_ct *e;
	__u64 now;

	if ((void *)(udp + 1) > data_end || (ip->frag_off & bpf_htons(PW_IP_MF | PW_IP_OFFSET)))
		return 0;
	ct_keys(ip, udp->source, udp->dest, &fk, &rk);
	now = bpf_ktime_get_ns();

	/* the other pod opened this flow: this packet answers it, addressed directly */
	e = bpf_map_lookup_elem(&pw_udp_ct, &rk);
	if (e && udp_ct_live(e, now)) {
		e->state = PW_UDP_CT_ANSWERED;
		e->last_ns = now;
		return 1;
	}
	if (e)
		bpf_map_delete_elem(&pw_udp_ct, &rk);

	/* this pod opened it: redirected only once answered */
	e = bpf_map_lookup_elem(&pw_udp_ct, &fk);
	if (e && udp_ct_live(e, now)) {
		e->last_ns = now;
		return e->state == PW_UDP_CT_ANSWERED;
	}
	{
		struct pw_udp_ct opened = { .last_ns = now, .state = PW_UDP_CT_OPENED };

		bpf_map_update_elem(&pw_udp_ct, &fk, &opened, BPF_ANY);
	}
	return 0;
}

static __always_inline int mac_eq(const __u8 *a, const __u8 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) |
		(a[5] ^ b[5])) == 0;
}

SEC("tc")
int pw_tc_egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct pw_endpoint *src, *dst;
	struct pw_ep_key key = {};

	if ((void *)(eth + 1) > data_end) {
		count(PW_TC_MALFORMED, skb);
		return TC_ACT_OK;
	}
	if (eth->h_proto != bpf_htons(ETH_P_IP)) {
		count(PW_TC_NOT_IPV4, skb);
		return TC_ACT_OK;
	}
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5) {
		count(PW_TC_MALFORMED, skb);
		return TC_ACT_OK;
	}

	key.ip = ip->daddr;
	dst = bpf_map_lookup_elem(&pw_endpoints, &key);
	if (!dst) {
		count(PW_TC_NOT_LOCAL, skb);
		return TC_ACT_OK;
	}
	key.ip = ip->saddr;
	src = bpf_map_lookup_elem(&pw_endpoints, &key);
	/* The source must be the pod behind this very interface: no spoofing
	 * of another pod's address into the bypass. */
	if (!src || src->ifindex != skb->ingress_ifindex) {
		count(PW_TC_SRC_UNKNOWN, skb);
		return TC_ACT_OK;
	}
	if (!(src->flags & PW_EP_ENABLED)) {
		count(PW_TC_SRC_DISABLED, skb);
		return TC_ACT_OK;
	}
	if (!(dst->flags & PW_EP_ENABLED)) {
		count(PW_TC_DST_DISABLED, skb);
		return TC_ACT_OK;
	}
	if (dst->ifindex == skb->ingress_ifindex) {
		count(PW_TC_HAIRPIN, skb);
		return TC_ACT_OK;
	}

	/*
	 * Only traffic that needs no NAT may skip the host. A TCP connection is
	 * redirected when this program saw its SYN go from one enabled pod to
	 * another; a reply of a connection kube-proxy DNATed (the client dialled
	 * a ClusterIP) looks pod-to-pod too, but needs conntrack's reverse NAT,
	 * and its SYN was never seen here. UDP: redirected once the flow was
	 * answered directly (udp_ct_track, above). Other protocols (ICMP, whose
	 * errors quote a NATed flow and need the host's NAT too; SCTP, which
	 * kube-proxy NATs as well) always take the normal path.
	 */
	if (ip->protocol == PW_IPPROTO_TCP) {
		struct tcphdr *tcp = (void *)ip + ip->ihl * 4;
		struct pw_ct_key ck = {}, rk = {};

		if ((void *)(tcp + 1) > data_end || (ip->frag_off & bpf_htons(PW_IP_OFFSET))) {
			count(PW_TC_UNTRACKED, skb);
			return TC_ACT_OK;
		}
		ct_keys(ip, tcp->source, tcp->dest, &ck, &rk);
		if (tcp->syn && !tcp->ack) {
			struct pw_ct seen = { .state = PW_CT_SYN_SEEN };

			bpf_map_update_elem(&pw_ct, &ck, &seen, BPF_ANY);
		} else if (tcp->syn) {
			/* SYN-ACK: ours only if it answers a SYN seen here. A connection
			 * kube-proxy DNATed may reuse the 4-tuple of an old one; its SYN
			 * went to the ClusterIP and never reset the entry: forget it. */
			struct pw_ct *e = bpf_map_lookup_elem(&pw_ct, &rk);

			if (!e || e->state != PW_CT_SYN_SEEN) {
				if (e)
					bpf_map_delete_elem(&pw_ct, &rk);
				count(PW_TC_UNTRACKED, skb);
				return TC_ACT_OK;
			}
			e->state = PW_CT_ESTABLISHED;
		} else if (!bpf_map_lookup_elem(&pw_ct, &ck) && !bpf_map_lookup_elem(&pw_ct, &rk)) {
			count(PW_TC_UNTRACKED, skb);
			return TC_ACT_OK;
		} else if (tcp->rst) {
			bpf_map_delete_elem(&pw_ct, &ck);
			bpf_map_delete_elem(&pw_ct, &rk);
		}
		/* the TCP header pointer is not used below: packet pointers stay valid */
	} else if (ip->protocol == PW_IPPROTO_UDP) {
		if (!udp_ct_track(ip, data_end)) {
			count(PW_TC_UDP_NOT_TRACKED, skb);
			return TC_ACT_OK;
		}
	} else {
		count(PW_TC_NOT_TCP_UDP, skb);
		return TC_ACT_OK;
	}

	if (!mac_eq(eth->h_dest, dst->mac)) {
		/* Routed hop: behave like the router we replace. */
		__u32 check;

		if (ip->ttl <= 1) {
			count(PW_TC_TTL_EXPIRED, skb);
			return TC_ACT_OK;
		}
		/* RFC 1624 incremental update for TTL-1 (as ip_decrease_ttl). */
		check = ip->check;
		check += bpf_htons(0x0100);
		ip->check = (__sum16)(check + (check >= 0xFFFF));
		ip->ttl--;
		__builtin_memcpy(eth->h_source, dst->gw_mac, ETH_ALEN);
		__builtin_memcpy(eth->h_dest, dst->mac, ETH_ALEN);
	}

	count(PW_TC_REDIRECTED, skb);
	/* A switched frame came in as PACKET_OTHERHOST (addressed to the pod,
	 * not to the host veth). Before 6.x, redirect_peer keeps pkt_type and
	 * ip_rcv_core drops OTHERHOST; the frame is now for the peer's host. */
	bpf_skb_change_type(skb, 0 /* PACKET_HOST */);
	return bpf_redirect_peer(dst->ifindex, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
