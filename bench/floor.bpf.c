// SPDX-License-Identifier: GPL-2.0
/*
 * The floor: a program on every hook netbee's tracepoint backend uses, each
 * returning at once. Whatever a tracer does on these hooks costs at least
 * this much, so "netbee minus floor" is the cost of netbee's own work.
 * Built at bench time (bench/build.py) with the project's pinned flags, loaded
 * with netbee.loader by bench/floor.py; never committed as an object.
 */
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))

char LICENSE[] SEC("license") = "GPL";

/* tp_btf programs take the raw tracepoint's arguments as an array of u64. */
#define FLOOR_TP(tp) \
	SEC("tp_btf/" #tp) int floor_##tp(__u64 *ctx) { return 0; }

FLOOR_TP(netif_receive_skb)
FLOOR_TP(netif_rx)
FLOOR_TP(net_dev_queue)
FLOOR_TP(net_dev_start_xmit)
FLOOR_TP(net_dev_xmit)
FLOOR_TP(kfree_skb)
FLOOR_TP(consume_skb)

/* One netfilter program, linked at each hook/family/priority netbee uses; 1 = NF_ACCEPT. */
SEC("netfilter") int floor_nf(void *ctx)
{
	return 1;
}
