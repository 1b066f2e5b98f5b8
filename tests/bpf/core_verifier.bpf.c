// SPDX-License-Identifier: GPL-2.0
/* CO-RE against the real verifier (tests/kernel/test_core_verifier.py): a poisoned access that
 * is dead code after relocation loads; a reachable one is rejected at the poison call. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct sk_buff {
	unsigned int len;
	unsigned int nb_no_such_field;
} __attribute__((preserve_access_index));

enum skb_drop_reason {
	SKB_DROP_REASON_NO_SOCKET,
	SKB_DROP_REASON_NB_NO_SUCH_REASON,
};

SEC("tp_btf/netif_receive_skb")
int core_guarded(unsigned long long *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	unsigned int v = skb->len;

	if (bpf_core_field_exists(skb->nb_no_such_field))
		v += skb->nb_no_such_field;
	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_NB_NO_SUCH_REASON))
		v += bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NB_NO_SUCH_REASON);
	v += bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NO_SOCKET);
	return v == 0xdeadbeef;
}

SEC("tp_btf/netif_receive_skb")
int core_unguarded(unsigned long long *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];

	return skb->nb_no_such_field == 7;
}

char LICENSE[] SEC("license") = "GPL";
