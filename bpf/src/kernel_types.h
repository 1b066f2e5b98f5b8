/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Our own minimal kernel type definitions, so the build depends on no kernel
 * (no generated vmlinux.h, no kernel headers: only libbpf's helper headers).
 *
 * Kernel structures carry preserve_access_index: clang records every field
 * access as a CO-RE relocation and the loader finds the real offset in the
 * running kernel's BTF. They list only the fields we read, under the kernel's
 * names; fields that the kernel nests in anonymous structs/unions (sk_buff's
 * header offsets, dev, sk) are matched through them by name at relocation.
 *
 * Wire headers (ethhdr, iphdr, ...) are fixed by the protocols, not by the
 * kernel: they are plain structs read from packet bytes, no relocations.
 *
 * struct pt_regs is the x86_64 register frame with the UAPI names that
 * bpf_tracing.h expects when __VMLINUX_H__ is not defined; its layout is ABI,
 * so kprobe context reads use fixed offsets.
 */
#ifndef NETBEE_KERNEL_TYPES_H
#define NETBEE_KERNEL_TYPES_H

typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u64 __be64;
typedef __u32 __wsum;
typedef __u16 __sum16;
typedef _Bool bool;
#define true 1
#define false 0
#define NULL ((void *)0)

/* UAPI constants (linux/bpf.h), stable numbers. */
enum {
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_RINGBUF = 27,
};
enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};
enum {
	BPF_RB_AVAIL_DATA = 0,
};
#define BPF_ANY 0

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_HOPOPTS 0
#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ROUTING 43
#define IPPROTO_FRAGMENT 44
#define IPPROTO_ICMPV6 58
#define IPPROTO_DSTOPTS 60
#define IPPROTO_SCTP 132

struct pt_regs {
	unsigned long r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8;
	unsigned long rax, rcx, rdx, rsi, rdi, orig_rax, rip, cs, eflags, rsp, ss;
};

/* ---- kernel objects (CO-RE relocated) ---- */

struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} __attribute__((preserve_access_index)) possible_net_t;

struct net_device {
	int ifindex;
	possible_net_t nd_net;
} __attribute__((preserve_access_index));

/* UAPI layout (16 bytes); the kernel's is a union of arrays, so no field
 * names to relocate: only sock_common's offset of it is relocated. */
struct in6_addr {
	__u8 s6_addr[16];
};

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
	__u16 sk_protocol;
} __attribute__((preserve_access_index));

/* The current task's process id and name: read with plain loads instead of two helper calls. */
struct task_struct {
	int tgid;
	char comm[16];
} __attribute__((preserve_access_index));

struct sk_buff {
	struct net_device *dev;
	struct sock *sk;
	unsigned int len;
	unsigned int data_len;
	int skb_iif;
	__be16 protocol;
	__u16 transport_header;
	__u16 network_header;
	__u16 mac_header;
	unsigned char *head;
	unsigned char *data;
} __attribute__((preserve_access_index));

struct nf_hook_state {
	__u8 hook;
	__u8 pf;
	struct net_device *in;
	struct net_device *out;
	struct sock *sk;
	struct net *net;
} __attribute__((preserve_access_index));

struct bpf_nf_ctx {
	const struct nf_hook_state *state;
	struct sk_buff *skb;
} __attribute__((preserve_access_index));

/*
 * Only for bpf_core_enum_value(): the loader puts in the running kernel's
 * number (drop reasons are renumbered between kernels); 12 is a placeholder.
 */
enum skb_drop_reason {
	SKB_DROP_REASON_NETFILTER_DROP = 12,
};

/* ---- wire formats (fixed by the protocols) ---- */

struct ethhdr {
	__u8 h_dest[6];
	__u8 h_source[6];
	__be16 h_proto;
};

struct iphdr {
	__u8 ihl_version;       /* version << 4 | ihl */
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__sum16 check;
	__be32 saddr;
	__be32 daddr;
};

struct ipv6hdr {
	__be32 vtc_flow;        /* version 4 bits, class 8, flow label 20 */
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct ipv6_opt_hdr {           /* hop-by-hop, routing, destination */
	__u8 nexthdr;
	__u8 hdrlen;            /* 8-octet units, not counting the first 8 */
};

struct tcphdr {
	__be16 source;
	__be16 dest;
	__be32 seq;
	__be32 ack_seq;
	__u8 doff_res;          /* data offset << 4 */
	__u8 flags;
	__be16 window;
	__sum16 check;
	__be16 urg_ptr;
};

struct udphdr {
	__be16 source;
	__be16 dest;
	__be16 len;
	__sum16 check;
};

struct icmphdr {                /* also ICMPv6: same first 8 bytes */
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 id;
	__be16 sequence;
};

#endif
