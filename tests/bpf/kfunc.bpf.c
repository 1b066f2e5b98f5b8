// SPDX-License-Identifier: GPL-2.0
/* Kernel function calls (tests/unit/test_kfunc.py, tests/kernel/test_kfunc.py): bpf_rdonly_cast,
 * resolved in the kernel's BTF or, on a kernel without it, replaced by the move it stands for;
 * and a kfunc no kernel has. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

struct net_device {
	int ifindex;
} __attribute__((preserve_access_index));

struct sk_buff {
	unsigned int len;
	struct net_device *dev;
} __attribute__((preserve_access_index));

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;
extern int nb_no_such_kfunc(void *obj) __ksym;

/* Returns the interface of the packet's device through an untrusted pointer. */
SEC("tp_btf/netif_receive_skb")
int cast_skb(unsigned long long *ctx)
{
	struct sk_buff *skb = bpf_rdonly_cast((void *)ctx[0], bpf_core_type_id_kernel(struct sk_buff));

	return skb->dev->ifindex + skb->len == 0x7fffffff;
}

SEC("tp_btf/netif_receive_skb")
int calls_missing(unsigned long long *ctx)
{
	return nb_no_such_kfunc((void *)ctx[0]);
}
