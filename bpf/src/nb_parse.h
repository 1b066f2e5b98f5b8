/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Packet parsing shared by every backend: fills a struct nb_event from an skb.
 *
 * Everything is read with bpf_probe_read_kernel from skb->head + offset and
 * only inside the linear area (head .. data + len - data_len): paged data
 * would need skb_copy_bits, which tracing programs cannot call. What lies
 * beyond the linear area is reported as NB_F_NONLINEAR, never guessed.
 *
 * Where the network header starts depends on the hook: early on the receive
 * path skb->network_header is stale (it is reset only in
 * __netif_receive_skb_core, after the netif_receive_skb tracepoint) while
 * skb->data already points at it; later skb->data moves on to the transport
 * header while network_header stays right. Each hook says which to try
 * first; the other is the fallback when the version nibble disagrees with
 * the expected family. The transport header offset is always computed from
 * the IP header (transport_header is unset on receive before L4).
 */
#ifndef NETBEE_PARSE_H
#define NETBEE_PARSE_H

#include "kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "netbee_abi.h"

#define NB_UNSET_HDR 0xffff
#define NB_IPV6_EXT_MAX 4        /* extension headers skipped at most */

/* Per-hook parse hints. */
#define HK_RX_EARLY  0x1   /* network header at skb->data, network_header stale */
#define HK_TX        0x2   /* transmit direction (self_pid applies) */
#define HK_SOCK      0x4   /* headers not built yet: 4-tuple from the socket */
#define HK_NO_L4HDR  0x8   /* not even the transport header exists yet */

/*
 * Reads of kernel objects. direct: the pointer is a BTF pointer (tp_btf,
 * fentry, netfilter programs), so a plain load does, which the JIT guards
 * like a probe read but without a helper call (the difference is most of
 * a hook's cost). Otherwise (kprobe: a plain number) bpf_probe_read_kernel.
 * Both forms are CO-RE relocated. direct is a constant in each program.
 */
#define NB_RD(direct, plain, core) ((direct) ? (plain) : (core))

/* Defined by the including program (netbee.bpf.c), set by the loader. */
extern const volatile __u32 direct_packet_reads;

struct nb_skbview {
	unsigned char *head;
	__u32 lin_end;          /* end of linear data, offset from head */
	bool direct;            /* head came from a BTF pointer (see nb_read) */
};

/* Copy size bytes (a constant) with plain loads, in the widest unit that divides it. */
static __always_inline void nb_copy_plain(void *dst, const unsigned char *src, __u32 size)
{
	int i;

	if (size % 4 == 0) {
#pragma clang loop unroll(full)
		for (i = 0; i < size / 4; i++)
			((__u32 *)dst)[i] = ((const __u32 *)src)[i];
	} else if (size % 2 == 0) {
#pragma clang loop unroll(full)
		for (i = 0; i < size / 2; i++)
			((__u16 *)dst)[i] = ((const __u16 *)src)[i];
	} else {
#pragma clang loop unroll(full)
		for (i = 0; i < size; i++)
			((__u8 *)dst)[i] = src[i];
	}
}

/*
 * Packet bytes inside the linear area. Where the kernel lets a program read
 * through a pointer-to-bytes field of a BTF pointer (skb->head is then
 * "rdonly_untrusted_mem": plain loads the JIT guards like a probe read;
 * 6.18 has it, 6.12 not), userspace sets direct_packet_reads, and the
 * header costs a few loads instead of a helper call, which was most of what
 * a packet the filter rejects cost. direct_packet_reads is constant to the
 * verifier: the other branch is never walked.
 */
static __always_inline int nb_read(void *dst, __u32 size, const struct nb_skbview *v, __u32 off)
{
	if (off + size > v->lin_end)
		return -1;
	if (v->direct && direct_packet_reads) {
		nb_copy_plain(dst, v->head + off, size);
		return 0;
	}
	return bpf_probe_read_kernel(dst, size, v->head + off);
}

static __always_inline bool nb_is_l4_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

/* The original datagram quoted by an ICMP/ICMPv6 error. */
static __always_inline void nb_parse_inner(struct nb_event *ev, const struct nb_skbview *v, __u32 off, __u8 family)
{
	__u16 ports[2];
	__u32 l4;

	if (family == 4) {
		struct iphdr ip;

		if (nb_read(&ip, sizeof(ip), v, off) || (ip.ihl_version >> 4) != 4)
			return;
		__builtin_memcpy(ev->inner_saddr, &ip.saddr, 4);
		__builtin_memcpy(ev->inner_daddr, &ip.daddr, 4);
		ev->inner_proto = ip.protocol;
		l4 = off + (ip.ihl_version & 0xf) * 4;
	} else {
		struct ipv6hdr ip6;

		if (nb_read(&ip6, sizeof(ip6), v, off) || (ip6.vtc_flow & 0xf0) != 0x60)
			return;
		__builtin_memcpy(ev->inner_saddr, ip6.saddr, 16);
		__builtin_memcpy(ev->inner_daddr, ip6.daddr, 16);
		/* the quoted packet's extension headers are not skipped */
		ev->inner_proto = ip6.nexthdr;
		l4 = off + sizeof(ip6);
	}
	ev->flags |= NB_F_INNER;
	if (nb_is_l4_ports(ev->inner_proto) && !nb_read(ports, sizeof(ports), v, l4)) {
		ev->inner_sport = bpf_ntohs(ports[0]);
		ev->inner_dport = bpf_ntohs(ports[1]);
	}
}

/* Transport header at off; l4_bytes = IP payload length (headers included). */
static __always_inline void nb_parse_l4(struct nb_event *ev, const struct nb_skbview *v, __u32 off, int l4_bytes)
{
	__u8 proto = ev->ip_proto;

	if (proto == IPPROTO_TCP) {
		struct tcphdr th;
		int hl;

		if (nb_read(&th, sizeof(th), v, off))
			goto nonlinear;
		ev->sport = bpf_ntohs(th.source);
		ev->dport = bpf_ntohs(th.dest);
		ev->seq = bpf_ntohl(th.seq);
		ev->ack = bpf_ntohl(th.ack_seq);
		ev->tcp_flags = th.flags;
		ev->window = bpf_ntohs(th.window);
		hl = (th.doff_res >> 4) * 4;
		if (l4_bytes >= hl)
			ev->payload_len = l4_bytes - hl;
	} else if (proto == IPPROTO_UDP) {
		struct udphdr uh;

		if (nb_read(&uh, sizeof(uh), v, off))
			goto nonlinear;
		ev->sport = bpf_ntohs(uh.source);
		ev->dport = bpf_ntohs(uh.dest);
		ev->udp_len = bpf_ntohs(uh.len);
	} else if (proto == IPPROTO_SCTP) {
		__u16 ports[2];

		if (nb_read(ports, sizeof(ports), v, off))
			goto nonlinear;
		ev->sport = bpf_ntohs(ports[0]);
		ev->dport = bpf_ntohs(ports[1]);
	} else if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
		struct icmphdr ih;
		bool echo, error;

		if (nb_read(&ih, sizeof(ih), v, off))
			goto nonlinear;
		ev->icmp_type = ih.type;
		ev->icmp_code = ih.code;
		if (proto == IPPROTO_ICMP) {
			echo = ih.type == 0 || ih.type == 8 || ih.type == 13 || ih.type == 14;
			/* unreachable, source quench, redirect, time exceeded, parameter problem */
			error = ih.type == 3 || ih.type == 4 || ih.type == 5 || ih.type == 11 || ih.type == 12;
		} else {
			echo = ih.type == 128 || ih.type == 129;
			error = ih.type >= 1 && ih.type <= 4;
		}
		if (echo) {
			ev->icmp_id = bpf_ntohs(ih.id);
			ev->icmp_seq = bpf_ntohs(ih.sequence);
		} else if (error) {
			nb_parse_inner(ev, v, off + sizeof(ih), proto == IPPROTO_ICMP ? 4 : 6);
		}
	} else {
		return;
	}
	ev->flags |= NB_F_HAS_L4;
	return;
nonlinear:
	ev->flags |= NB_F_NONLINEAR;
}

/* An IP header of either family, read in one go (the version nibble is its first byte's high half). */
union nb_iph {
	struct iphdr v4;
	struct ipv6hdr v6;
};

#define NB_NO_L3 0xffffffff

/*
 * Read the family's IP header at off, or else at alt (the header offsets
 * section of bpf/src/README.md says why there are two candidates). Returns
 * the offset that holds one, NB_NO_L3 if neither does. One read (nb_read)
 * in the common case: the version is checked on the header itself.
 */
static __always_inline __u32 nb_read_iph(union nb_iph *h, const struct nb_skbview *v, __u32 off, __u32 alt,
					 __u8 family)
{
	if (family == 4) {
		if (!nb_read(h, sizeof(h->v4), v, off) && (h->v4.ihl_version >> 4) == 4)
			return off;
		if (!nb_read(h, sizeof(h->v4), v, alt) && (h->v4.ihl_version >> 4) == 4)
			return alt;
	} else {
		if (!nb_read(h, sizeof(h->v6), v, off) && (*(__u8 *)h >> 4) == 6)
			return off;
		if (!nb_read(h, sizeof(h->v6), v, alt) && (*(__u8 *)h >> 4) == 6)
			return alt;
	}
	return NB_NO_L3;
}

/* Returns the transport offset (0: none) and sets *l4_bytes. */
static __always_inline __u32 nb_parse_ipv4(struct nb_event *ev, const struct iphdr *ip, __u32 off, int *l4_bytes)
{
	__u32 ihl = (ip->ihl_version & 0xf) * 4;

	ev->family = 4;
	ev->ip_proto = ip->protocol;
	ev->ttl = ip->ttl;
	ev->ip_len = bpf_ntohs(ip->tot_len);
	__builtin_memcpy(ev->saddr, &ip->saddr, 4);
	__builtin_memcpy(ev->daddr, &ip->daddr, 4);
	ev->flags |= NB_F_HAS_L3;
	if (ihl < sizeof(*ip) || (bpf_ntohs(ip->frag_off) & 0x1fff))
		return 0;       /* bad header, or a non-first fragment: no L4 here */
	*l4_bytes = (int)ev->ip_len - (int)ihl;
	return off + ihl;
}

static __always_inline __u32 nb_parse_ipv6(struct nb_event *ev, const struct ipv6hdr *ip6, const struct nb_skbview *v,
					   __u32 off, int *l4_bytes)
{
	__u32 l4 = off + sizeof(*ip6);
	__u8 next;
	int i;

	ev->family = 6;
	ev->ttl = ip6->hop_limit;
	ev->ip_len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
	__builtin_memcpy(ev->saddr, ip6->saddr, 16);
	__builtin_memcpy(ev->daddr, ip6->daddr, 16);
	ev->flags |= NB_F_HAS_L3;
	next = ip6->nexthdr;
#pragma clang loop unroll(full)
	for (i = 0; i < NB_IPV6_EXT_MAX; i++) {
		struct ipv6_opt_hdr oh;

		if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING &&
		    next != IPPROTO_DSTOPTS && next != IPPROTO_FRAGMENT)
			break;
		if (nb_read(&oh, sizeof(oh), v, l4)) {
			ev->flags |= NB_F_NONLINEAR;
			ev->ip_proto = next;
			return 0;
		}
		if (next == IPPROTO_FRAGMENT) {
			__be16 frag;

			if (nb_read(&frag, sizeof(frag), v, l4 + 2))
				return 0;
			if (bpf_ntohs(frag) & 0xfff8) {     /* non-first fragment */
				ev->ip_proto = oh.nexthdr;
				return 0;
			}
			l4 += 8;
		} else {
			l4 += (oh.hdrlen + 1) * 8;
		}
		next = oh.nexthdr;
	}
	ev->ip_proto = next;
	*l4_bytes = (int)ev->ip_len - (int)(l4 - off);
	return l4;
}

/* Family expected from skb->protocol (0: not IP). */
static __always_inline __u8 nb_family_of(__u16 ethertype)
{
	if (ethertype == ETH_P_IP)
		return 4;
	if (ethertype == ETH_P_IPV6)
		return 6;
	return 0;
}

#define NB_TCP_LISTEN 10        /* include/net/tcp_states.h, a stable kernel ABI */

/* IPv4/IPv6 4-tuple from the socket, for transmit hooks before the headers exist. */
static __always_inline void nb_parse_sock(struct nb_event *ev, struct sock *sk, __u8 want_family)
{
	__u16 fam = BPF_CORE_READ(sk, __sk_common.skc_family);
	__u8 fam6 = fam == AF_INET6;

	if (fam != AF_INET && fam != AF_INET6)
		return;
	if (fam6 && want_family != 4) {
		struct in6_addr d6;

		BPF_CORE_READ_INTO(&d6, sk, __sk_common.skc_v6_daddr);
		/* a v4-mapped peer (::ffff:a.b.c.d) leaves through IPv4 */
		if (want_family == 0) {
			__u32 w[3];

			__builtin_memcpy(w, d6.s6_addr, 12);
			if (w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff))
				fam6 = 0;
		}
		if (fam6) {
			ev->family = 6;
			__builtin_memcpy(ev->daddr, d6.s6_addr, 16);
			BPF_CORE_READ_INTO(&d6, sk, __sk_common.skc_v6_rcv_saddr);
			__builtin_memcpy(ev->saddr, d6.s6_addr, 16);
		}
	}
	if (!fam6 || want_family == 4) {
		__be32 a;

		ev->family = 4;
		a = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__builtin_memcpy(ev->saddr, &a, 4);
		a = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(ev->daddr, &a, 4);
	}
	ev->ip_proto = BPF_CORE_READ(sk, sk_protocol);
	if (nb_is_l4_ports(ev->ip_proto)) {
		ev->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
		ev->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	}
	ev->flags |= NB_F_FROM_SOCK;
}

/* What the link-layer part of the parse needs, kept from the network-layer part. */
struct nb_pkt {
	struct nb_skbview v;
	__u32 l3;               /* network header offset (also for non-IP) */
	__u32 l4;               /* transport header offset, 0: none to parse */
	int l4_bytes;           /* IP payload length, transport header included */
	__u16 mh;               /* skb->mac_header */
	__u16 proto;            /* skb->protocol, host order */
	bool l2;                /* the packet has a link-layer view to report */
};

/*
 * Fill ev's network and transport fields from skb: what the filter looks
 * at. want_family: 4/6 when the hook implies it (netfilter pf, IPv6-only
 * functions), 0 to trust skb->protocol. sk: the socket passed to transmit
 * functions (HK_SOCK), else NULL. The transport header is left at p->l4
 * for the caller (nb_parse_l4), the link layer to nb_parse_l2: both are
 * read only when needed.
 */
static __always_inline void nb_parse_skb(struct nb_event *ev, struct nb_pkt *p, struct sk_buff *skb, __u32 hints,
					 __u8 want_family, struct sock *sk, bool direct)
{
	unsigned char *data;
	__u32 len, data_len, data_off, l3, alt, l4 = 0;
	__u16 nh;
	__u8 family;
	int l4_bytes = 0;

	p->v.head = NB_RD(direct, skb->head, BPF_CORE_READ(skb, head));
	data = NB_RD(direct, skb->data, BPF_CORE_READ(skb, data));
	len = NB_RD(direct, skb->len, BPF_CORE_READ(skb, len));
	data_len = NB_RD(direct, skb->data_len, BPF_CORE_READ(skb, data_len));
	data_off = (__u32)(data - p->v.head);
	p->v.lin_end = data_off + (len - data_len);
	p->v.direct = direct;
	p->l2 = false;
	p->l4 = 0;
	ev->skb_len = len;

	if (hints & HK_SOCK) {
		/*
		 * A SYN-ACK leaves through the listener (ip6_xmit(listener, skb, fl6)),
		 * which has no peer: the skb belongs to the request socket, whose
		 * sock_common carries the connection's addresses and ports.
		 */
		if (!sk || BPF_CORE_READ(sk, __sk_common.skc_state) == NB_TCP_LISTEN)
			sk = NB_RD(direct, skb->sk, BPF_CORE_READ(skb, sk));
		if (sk && BPF_CORE_READ(sk, __sk_common.skc_state) != NB_TCP_LISTEN)
			nb_parse_sock(ev, sk, want_family);
		if (hints & HK_NO_L4HDR) {
			if (ev->ip_proto == IPPROTO_TCP)
				ev->payload_len = len;
			return;
		}
		/* the transport header is built and skb->data points at it */
		if (ev->family && nb_is_l4_ports(ev->ip_proto)) {
			__u16 th = NB_RD(direct, skb->transport_header, BPF_CORE_READ(skb, transport_header));

			nb_parse_l4(ev, &p->v, th != NB_UNSET_HDR ? th : data_off, (int)(p->v.lin_end - data_off));
		}
		return;
	}

	p->l2 = true;
	p->mh = NB_RD(direct, skb->mac_header, BPF_CORE_READ(skb, mac_header));
	nh = NB_RD(direct, skb->network_header, BPF_CORE_READ(skb, network_header));
	p->proto = bpf_ntohs(NB_RD(direct, skb->protocol, BPF_CORE_READ(skb, protocol)));
	family = want_family ? want_family : nb_family_of(p->proto);
	if (hints & HK_RX_EARLY) {
		l3 = data_off;
		alt = nh;
	} else {
		l3 = nh;
		alt = data_off;
	}
	p->l3 = l3;
	p->l4 = 0;
	if (family) {
		union nb_iph h;
		__u32 at = nb_read_iph(&h, &p->v, l3, alt, family);

		if (at != NB_NO_L3) {
			p->l3 = at;
			if (family == 4)
				l4 = nb_parse_ipv4(ev, &h.v4, at, &l4_bytes);
			else
				l4 = nb_parse_ipv6(ev, &h.v6, &p->v, at, &l4_bytes);
		}
	}
	p->l4 = l4;
	p->l4_bytes = l4_bytes;
}

/* The Ethernet header, when there is one before the network header. */
static __always_inline void nb_parse_l2(struct nb_event *ev, const struct nb_pkt *p)
{
	if (!p->l2)
		return;
	if (p->mh != NB_UNSET_HDR && p->mh + sizeof(struct ethhdr) <= p->l3) {
		struct ethhdr eth;

		if (!nb_read(&eth, sizeof(eth), &p->v, p->mh)) {
			__builtin_memcpy(ev->dmac, eth.h_dest, 6);
			__builtin_memcpy(ev->smac, eth.h_source, 6);
			ev->ethertype = bpf_ntohs(eth.h_proto);
			ev->flags |= NB_F_HAS_L2;
			return;
		}
	}
	ev->ethertype = p->proto;
}

#endif
