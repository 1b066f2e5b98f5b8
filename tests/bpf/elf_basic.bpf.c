// SPDX-License-Identifier: GPL-2.0
/*
 * Test object for netbee/loader/elf.py: every program section kind, several
 * programs in one section, BTF-defined maps of several types, global data in
 * .rodata/.data/.bss/.data.custom, a const volatile config struct, static and
 * global subprograms called from several sections (also transitively), a
 * callback passed by address, and CO-RE relocations inside a subprogram.
 * Never loaded: only parsed.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

struct val {
	__u64 packets;
	__u32 bytes;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct val);
	__uint(max_entries, 128);
	__uint(map_flags, BPF_F_NO_PREALLOC);
#ifndef ELF_NO_PIN
	__uint(pinning, LIBBPF_PIN_BY_NAME);
#endif
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, __u64);
	__type(value, __u32);
	__uint(max_entries, 4096);
} lru SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 4);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 32 * sizeof(__u64));
	__uint(max_entries, 64);
} stacks SEC(".maps");

struct cfg {
	__u32 enabled;
	__u32 port;
	__u8 addr[16];
};

const volatile struct cfg cfg = {};          /* .rodata, set before load */
const volatile __u32 limit = 7;              /* .rodata */
__u32 hits = 3;                               /* .data */
__u64 total;                                  /* .bss */
__u32 extra[4];                               /* .bss */
__u32 custom_val SEC(".data.custom") = 42;    /* .data.custom */

struct sk_buff___elf {
	unsigned int len;
	__u16 protocol;
} __attribute__((preserve_access_index));

static __noinline __u64 bump(__u32 key)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &key);

	if (c)
		*c += 1;
	total += hits;
	return c ? *c : 0;
}

static __noinline int read_len(struct sk_buff___elf *skb)
{
	if (!bpf_core_field_exists(skb->protocol))
		return -1;
	return BPF_CORE_READ(skb, len) + bump(1);
}

__noinline int global_helper(__u32 x)
{
	return x * 2 + limit;
}

static int loop_cb(__u32 index, void *ctx)
{
	extra[index & 3] += 1;
	return 0;
}

static __always_inline int common(void *ctx)
{
	struct val v = {};
	__u32 key = cfg.port;

	if (!cfg.enabled)
		return 0;
	v.packets = bump(0);
	bpf_map_update_elem(&flows, &key, &v, BPF_ANY);
	return 0;
}

SEC("kprobe/ip_rcv")
int kp(void *ctx) { return common(ctx); }

SEC("kretprobe/ip_rcv")
int krp(void *ctx) { return global_helper(1); }

SEC("kprobe.multi/ip_*")
int kpm(void *ctx) { return common(ctx); }

SEC("kretprobe.multi/ip_*")
int krpm(void *ctx) { return 0; }

SEC("fentry/ip_rcv")
int fe(void *ctx) { return read_len(ctx); }

SEC("fexit/ip_rcv")
int fx(void *ctx) { return 0; }

SEC("tp_btf/netif_receive_skb")
int tpb_one(__u64 *ctx) { return read_len((void *)ctx[0]); }

SEC("tp_btf/netif_receive_skb")
int tpb_two(__u64 *ctx)
{
	__u64 key = ctx[0];
	__u32 one = 1;

	bpf_map_update_elem(&lru, &key, &one, BPF_ANY);
	bpf_loop(4, loop_cb, NULL, 0);
	return global_helper(custom_val);
}

SEC("raw_tp/net_dev_queue")
int rtp(void *ctx) { return bpf_get_stackid(ctx, &stacks, 0) < 0; }

SEC("raw_tracepoint/net_dev_xmit")
int rtp_long(void *ctx) { hits++; return 0; }

SEC("tracepoint/skb/kfree_skb")
int tp_kfree(void *ctx)
{
	__u32 *slot = bpf_ringbuf_reserve(&events, sizeof(__u32), 0);

	if (!slot)
		return 0;
	*slot = limit;
	bpf_ringbuf_submit(slot, 0);
	return 0;
}

SEC("tp/net/netif_rx")
int tp_short(void *ctx) { return (int)bump(2); }

SEC("netfilter")
int nf(void *ctx) { return 1; }

SEC("raw_tp/consume_skb")
int rtp_str(void *ctx)
{
	static __u32 calls;            /* a function-static: .bss, symbol "rtp_str.calls" */
	char buf[8];

	calls++;
	/* a string literal: .rodata.str1.1, reached through its section symbol */
	bpf_probe_read_kernel_str(buf, sizeof(buf), "netbee!");
	return buf[calls & 3];
}
