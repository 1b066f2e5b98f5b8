// SPDX-License-Identifier: GPL-2.0
/* CO-RE test object: local definitions of kernel types, relocated against real kernels' BTF
 * (this machine's vmlinux, Debian 6.1 and 6.12); compared with libbpf by tests/oracle/. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define __pai __attribute__((preserve_access_index))

struct net_device {
	int ifindex;
	char name[16];
	unsigned int mtu;
} __pai;

struct sock_common {
	unsigned short skc_family;
	unsigned int skc_net_cookie_missing; /* no such field: exists == 0 */
} __pai;

struct sock {
	struct sock_common __sk_common;
	unsigned short sk_protocol; /* a bitfield in old kernels, u16 later */
	unsigned short sk_type;
} __pai;

struct sk_buff {
	unsigned int len;
	unsigned int data_len;
	unsigned short protocol;
	unsigned short transport_header;
	unsigned short network_header;
	unsigned char pkt_type : 3;
	unsigned char *head;
	unsigned char *data;
	struct net_device *dev;
	struct sock *sk;
	unsigned long _skb_refdst;
	unsigned int hash;
	__u32 mark;
} __pai;

/* flavor for a field that older kernels called differently */
struct sk_buff___nb_old {
	int nb_never_existed;
} __pai;

struct iphdr {
	__u8 ihl : 4, version : 4;
	__u8 tos;
	__be16 tot_len;
	__be32 saddr;
	__be32 daddr;
} __pai;

struct task_struct {
	int pid;
	int tgid;
	char comm[16];
} __pai;

enum skb_drop_reason {
	SKB_DROP_REASON_NOT_SPECIFIED,
	SKB_DROP_REASON_NO_SOCKET,
	SKB_DROP_REASON_NETFILTER_DROP,
	SKB_DROP_REASON_NB_FAKE,
};

enum nf_inet_hooks {
	NF_INET_PRE_ROUTING,
	NF_INET_LOCAL_IN,
	NF_INET_FORWARD,
	NF_INET_LOCAL_OUT,
	NF_INET_POST_ROUTING,
	NF_INET_NUMHOOKS,
};

struct nb_ctx {
	struct sk_buff *skb;
	struct iphdr *ip;
	struct task_struct *task;
} __pai;

SEC("raw_tp/nb_kcore_skb")
long kcore_skb(struct nb_ctx *ctx)
{
	struct sk_buff *skb = ctx->skb;
	long r = 0;

	r += skb->len;
	r += skb->protocol;
	r += skb->network_header;
	r += skb->dev->ifindex;
	r += skb->dev->name[3];
	r += skb->mark;
	r += skb->hash;
	r += BPF_CORE_READ(skb, sk, __sk_common.skc_family);
	r += BPF_CORE_READ_BITFIELD_PROBED(skb, pkt_type);
	r += BPF_CORE_READ_BITFIELD_PROBED(skb->sk, sk_protocol);
	r += BPF_CORE_READ_BITFIELD_PROBED(ctx->ip, version);
	r += BPF_CORE_READ_BITFIELD(ctx->ip, ihl);
	r += bpf_core_field_size(skb->_skb_refdst);
	r += bpf_core_field_offset(skb->head);
	return r;
}

SEC("raw_tp/nb_kcore_exists")
long kcore_exists(struct nb_ctx *ctx)
{
	struct sk_buff *skb = ctx->skb;
	long r = 0;

	r += bpf_core_field_exists(skb->sk->__sk_common.skc_net_cookie_missing);
	if (bpf_core_field_exists(skb->sk->__sk_common.skc_net_cookie_missing))
		r += skb->sk->__sk_common.skc_net_cookie_missing; /* poisoned */
	if (bpf_core_field_exists(((struct sk_buff___nb_old *)skb)->nb_never_existed))
		r += BPF_CORE_READ((struct sk_buff___nb_old *)skb, nb_never_existed);
	r += bpf_core_type_exists(struct sk_buff);
	r += bpf_core_type_size(struct sk_buff);
	r += bpf_core_type_size(struct task_struct);
	r += bpf_core_type_id_kernel(struct sk_buff);
	r += bpf_core_type_matches(struct iphdr);
	r += bpf_core_type_matches(enum nf_inet_hooks);
	r += BPF_CORE_READ(ctx->task, comm[1]);
	r += BPF_CORE_READ(ctx->task, tgid);
	return r;
}

SEC("raw_tp/nb_kcore_enums")
long kcore_enums(void *ctx)
{
	long r = 0;

	r += bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NO_SOCKET);
	r += bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NETFILTER_DROP);
	r += bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_NB_FAKE);
	r += bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NB_FAKE); /* poisoned */
	r += bpf_core_enum_value(enum nf_inet_hooks, NF_INET_NUMHOOKS);
	return r;
}

char LICENSE[] SEC("license") = "GPL";
