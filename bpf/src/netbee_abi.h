/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The ABI between NetBee's kernel programs and its Python side: the event
 * record, the hook ids, the filter rule table and the configuration block.
 * netbee/abi.py mirrors every layout here with construct; tests/test_abi.py
 * checks both against the BTF of the built object, so this file is the single
 * source of truth.
 */
#ifndef NETBEE_ABI_H
#define NETBEE_ABI_H

#define NB_COMM_LEN 16
#define NB_MAX_RULES 32      /* filter program length (postfix ops) */
#define NB_MAX_STACK 32      /* frames captured for drop events */

/* Where an event was seen. Values are stable: userspace names them. */
enum nb_hook {
	NB_HOOK_NONE = 0,
	NB_HOOK_NETIF_RX = 1,
	NB_HOOK_NETIF_RECEIVE_SKB = 2,
	NB_HOOK_IP_RCV = 3,
	NB_HOOK_IP_LOCAL_DELIVER = 4,
	NB_HOOK_IP_FORWARD = 5,
	NB_HOOK_TCP_V4_RCV = 6,
	NB_HOOK_UDP_RCV = 7,
	NB_HOOK_ICMP_RCV = 8,
	NB_HOOK_TCP_TRANSMIT_SKB = 9,
	NB_HOOK_IP_QUEUE_XMIT = 10,
	NB_HOOK_DEV_QUEUE_XMIT = 11,
	NB_HOOK_NET_DEV_START_XMIT = 12,
	NB_HOOK_NF_HOOK_SLOW = 13,   /* kprobe/fentry: entry+return, verdict set */
	NB_HOOK_NF_BRACKET = 14,     /* tracepoint backend: netfilter bracket */
	NB_HOOK_KFREE_SKB = 15,      /* drop, with reason and optional stack */
	NB_HOOK_IPV6_RCV = 16,
	NB_HOOK_IP6_INPUT = 17,
	NB_HOOK_IP6_FORWARD = 18,
	NB_HOOK_TCP_V6_RCV = 19,
	NB_HOOK_UDPV6_RCV = 20,
	NB_HOOK_ICMPV6_RCV = 21,
	NB_HOOK_IP6_XMIT = 22,
	NB_HOOK_IP_OUTPUT = 23,
	NB_HOOK_IP6_OUTPUT = 24,
	NB_HOOK_MAX = 25,
};

/* nb_event.flags */
#define NB_F_HAS_L2     0x0001   /* smac/dmac/ethertype valid */
#define NB_F_HAS_L3     0x0002   /* family and addresses valid */
#define NB_F_HAS_L4     0x0004   /* transport fields valid */
#define NB_F_INNER      0x0008   /* ICMP error: inner_* valid */
#define NB_F_NF         0x0010   /* nf_hook/verdict valid */
#define NB_F_DROP       0x0020   /* drop_reason/location valid */
#define NB_F_STACK      0x0040   /* stack_depth frames follow the record */
#define NB_F_TCP_STATE  0x0080   /* tcp_state valid */
#define NB_F_NONLINEAR  0x0100   /* transport header was not in the linear area */
#define NB_F_FROM_SOCK  0x0200   /* family/addresses/ports taken from the socket:
                                    the headers were not built yet (transmit) */

/* nb_event.verdict: the kernel's NF_* values, plus one of ours. */
#define NB_VERDICT_DROP    0
#define NB_VERDICT_ACCEPT  1
#define NB_VERDICT_STOLEN  2
#define NB_VERDICT_QUEUE   3

/*
 * One ring buffer record. All integers are in host byte order (ports,
 * seq, ack too); addresses are in network order, IPv4 in the first 4 bytes.
 * When NB_F_STACK is set, stack_depth __u64 return addresses follow.
 */
struct nb_event {
	__u64 ts_ns;            /* bpf_ktime_get_ns() */
	__u64 skb;              /* skb address, to follow one packet */
	__u64 location;         /* kfree_skb: where it was freed */
	__u32 netns;            /* network namespace inode */
	__u32 ifindex;
	__u32 pid;
	__u32 drop_reason;      /* enum skb_drop_reason, named from kernel BTF */
	__u32 seq;
	__u32 ack;
	__u16 hook;             /* enum nb_hook */
	__u16 cpu;
	__u16 flags;            /* NB_F_* */
	__u16 ethertype;
	__u16 ip_len;           /* IPv4 total length; IPv6 payload length + 40 */
	__u16 skb_len;
	__u16 sport;
	__u16 dport;
	__u16 window;
	__u16 payload_len;      /* TCP: segment payload bytes */
	__u16 udp_len;          /* UDP header length field */
	__u16 icmp_id;
	__u16 icmp_seq;
	__u16 inner_sport;
	__u16 inner_dport;
	__u16 stack_depth;
	__u8 family;            /* 4, 6 or 0 */
	__u8 ip_proto;
	__u8 ttl;               /* TTL or hop limit */
	__u8 tcp_flags;         /* FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 URG 0x20 ECE 0x40 CWR 0x80 */
	__u8 tcp_state;         /* sk->__sk_common.skc_state (TCP_ESTABLISHED = 1 ...) */
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 inner_proto;
	__u8 nf_hook;           /* NF_INET_PRE_ROUTING 0 .. NF_INET_POST_ROUTING 4 */
	__u8 verdict;           /* NB_VERDICT_* */
	__u8 smac[6];
	__u8 dmac[6];
	__u8 saddr[16];
	__u8 daddr[16];
	__u8 inner_saddr[16];
	__u8 inner_daddr[16];
	char comm[NB_COMM_LEN];
};

/* Filter: a postfix program over a stack of booleans (see netbee/filter). */
enum nb_rule_op {
	NB_OP_TERM = 0,   /* push the value of a match term */
	NB_OP_AND = 1,    /* pop b, pop a, push a && b */
	NB_OP_OR = 2,
	NB_OP_NOT = 3,    /* pop a, push !a */
	NB_OP_REQUIRE = 4, /* pop a; if !a the filter does not match: stop (top-level "and") */
};

enum nb_rule_field {
	NB_FIELD_TRUE = 0,
	NB_FIELD_FAMILY = 1,     /* lo: 4 or 6 */
	NB_FIELD_PROTO = 2,      /* lo: IP protocol number */
	NB_FIELD_SRC_NET = 3,    /* family + addr/mask */
	NB_FIELD_DST_NET = 4,
	NB_FIELD_ANY_NET = 5,    /* src or dst */
	NB_FIELD_SRC_PORT = 6,   /* lo..hi, TCP/UDP/SCTP only */
	NB_FIELD_DST_PORT = 7,
	NB_FIELD_ANY_PORT = 8,
	NB_FIELD_IFINDEX = 9,    /* value */
	NB_FIELD_NETNS = 10,     /* value: inode */
};

struct nb_rule {
	__u8 op;
	__u8 field;
	__u8 family;
	__u8 pad;
	__u16 lo;
	__u16 hi;
	__u32 value;
	__u8 addr[16];
	__u8 mask[16];
};

/*
 * Configuration, a `const volatile` global in .rodata written by the loader
 * before load: the verifier then prunes what the configuration turns off.
 */
struct nb_config {
	__u32 filter_len;        /* 0: everything matches */
	__u32 want_stack;        /* capture call stacks for drop events */
	__u32 wakeup_bytes;      /* wake the reader once this much is queued */
	struct nb_rule rules[NB_MAX_RULES];
};

/* The filter of a dynamic program set (filter_dynamic): written by userspace after load. */
struct nb_dyn_filter {
	__u32 filter_len;        /* 0: everything matches */
	struct nb_rule rules[NB_MAX_RULES];
};

/*
 * Event counters. Kept twice per CPU: a program holding a nesting level of
 * the scratch map counts in that level's row of struct nb_scratch_head with
 * a plain add (the level is written by its holder only, so the add is exact,
 * and it costs no map lookup and no locked instruction: most of what a
 * packet the filter rejects cost besides the filter itself); a program
 * without one (a netfilter exit reporting its entry's event, no level free)
 * counts in the `counters` percpu array map, atomically. Userspace sums both.
 */
enum nb_counter {
	NB_CNT_FILTERED = 0,    /* rejected by the filter */
	NB_CNT_SUBMITTED = 1,   /* written to the ring buffer */
	NB_CNT_LOST = 2,        /* ring buffer full, or no scratch level free */
	NB_CNT_MAX = 3,
};

#define NB_NEST 4               /* program nesting depth on one CPU (task, softirq, hardirq, nmi) */

/* The start of the `scratch` map's per-CPU value (key 0); the records follow it. */
struct nb_scratch_head {
	__u32 depth;                            /* nesting levels taken */
	__u32 pad;
	__u64 count[NB_NEST][NB_CNT_MAX];       /* per level, by enum nb_counter */
};

#endif
