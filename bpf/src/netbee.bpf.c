// SPDX-License-Identifier: GPL-2.0
/*
 * NetBee's kernel programs: one source, three backends (kprobe, fentry,
 * tracepoint + netfilter), sharing the parse / filter / emit code.
 *
 * Program names are <backend>_<hook>: kp_* kprobes, kr_* kretprobes, fe_*
 * fentry, fx_* fexit, tp_* tp_btf, nf_entry/nf_exit netfilter. Section names
 * carry the generic kernel function; the tracer replaces it with the symbol
 * that exists on the running kernel (netbee/hooks.py lists the candidates).
 *
 * Counters: every event candidate ends counted exactly once, as FILTERED,
 * SUBMITTED or LOST (LOST also when no scratch level is free); see enum
 * nb_counter for where.
 *
 * self_pid is applied on transmit hooks only: on receive, softirq work
 * runs in whatever task it interrupted, so netbee's own pid there says
 * nothing about the packet. (It does not hide sshd sending netbee's output;
 * a filter does that.)
 */
#include "kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "netbee_abi.h"

char LICENSE[] SEC("license") = "GPL";

const volatile struct nb_config cfg = {};
/* 1: packet bytes may be read with plain loads (nb_read); the loader probes the kernel for it */
const volatile __u32 direct_packet_reads = 0;
/* bit 1 << NB_FIELD_x for every field the filter's terms look at; the loader computes it from the
 * rules. The default (all) is always correct, only slower: ports are then read before the filter. */
const volatile __u32 filter_fields = 0xffffffff;
/* 1: the filter's rules are read at run time from dyn_filter (.bss) instead of cfg. One loaded
 * program set then serves every filter: a run with a new filter writes its rules there and reuses
 * the set an earlier run pinned (netbee/progcache.py), skipping the verifier. */
const volatile __u32 filter_dynamic = 0;
struct nb_dyn_filter dyn_filter = {};
/* netbee's own tgid, never traced. Not in cfg: a run that reuses pinned programs (netbee/progcache.py)
 * has another pid, so it is written at each start into this writable global (.bss). */
__u32 self_pid = 0;

/* Never read: they put these types into the object's BTF for netbee/abi.py's tests. */
const volatile enum nb_hook abi_hook_type = NB_HOOK_MAX;
const volatile enum nb_counter abi_counter_type = NB_CNT_MAX;

/*
 * Since 6.4 every pointer the verifier loads through a trusted pointer (a tp_btf argument, a
 * netfilter context's skb and hook state) makes it search the whole kernel BTF by name for the
 * "__safe_trusted"/"__safe_rcu" variants of the type: ~1 ms per load each time it walks one,
 * most of a first start's verification. Through an untrusted pointer it does not search. So the
 * pointer fields (skb->dev, skb->sk, the hook state's devices and net) are read through
 * nb_untrusted, every other field through the trusted pointer: a load through an untrusted
 * pointer is exception-protected (BPF_PROBE_MEM: a range check more), a trusted one is plain.
 * The verifier turns bpf_rdonly_cast into a register move; on kernels without the kfunc
 * (< 6.2, no search either) the loader writes that move itself.
 */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __attribute__((const));
#define nb_untrusted(p, type) ((type *)bpf_rdonly_cast((p), bpf_core_type_id_kernel(type)))

#include "nb_parse.h"
#include "nb_filter.h"

#define NB_NF_DEPTH 8           /* netfilter hooks in flight on one CPU */
#define NB_NF_STALE_NS 10000000 /* an entry older than this on its CPU has left unseen */

struct nb_record {
	struct nb_event ev;
	__u64 stack[NB_MAX_STACK];      /* sent right after ev when NB_F_STACK */
	__u32 fst;                      /* filter stack, see nb_filter_match (the interpreter) */
	__u32 pad;
	__u64 forget[8];                /* see NB_PUT */
};

struct nb_scratch {
	struct nb_scratch_head h;
	struct nb_record rec[NB_NEST];
};

struct nb_flight {
	__u64 skb;
	__u64 ts;
	__u32 match;            /* ev holds a built event the filter kept */
	__u32 pad;
	struct nb_event ev;
};

struct nb_flight_stack {
	__u32 depth;
	__u32 pad;
	struct nb_flight e[NB_NF_DEPTH];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);   /* the loader sets the real size */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NB_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nb_scratch);
} scratch SEC(".maps");

/* Netfilter packets in flight: entry/exit bracket, or nf_hook_slow entry/return. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nb_flight_stack);
} nf_flight SEC(".maps");

/* For a program that holds no scratch level (see enum nb_counter). */
static __always_inline void nb_count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &which);

	if (c)
		__sync_fetch_and_add(c, 1);
}

static __always_inline __u32 nb_hook_hints(__u32 hook)
{
	switch (hook) {
	case NB_HOOK_NETIF_RX:
	case NB_HOOK_NETIF_RECEIVE_SKB:
	case NB_HOOK_IP_RCV:
	case NB_HOOK_IPV6_RCV:
		return HK_RX_EARLY;
	case NB_HOOK_TCP_TRANSMIT_SKB:
		return HK_TX | HK_SOCK | HK_NO_L4HDR;
	case NB_HOOK_IP_QUEUE_XMIT:
	case NB_HOOK_IP6_XMIT:
		return HK_TX | HK_SOCK;
	case NB_HOOK_IP_OUTPUT:
	case NB_HOOK_IP6_OUTPUT:
	case NB_HOOK_DEV_QUEUE_XMIT:
	case NB_HOOK_NET_DEV_START_XMIT:
		return HK_TX;
	}
	return 0;
}

static __always_inline __u8 nb_hook_family(__u32 hook)
{
	switch (hook) {
	case NB_HOOK_IP_RCV:
	case NB_HOOK_IP_LOCAL_DELIVER:
	case NB_HOOK_IP_FORWARD:
	case NB_HOOK_TCP_V4_RCV:
	case NB_HOOK_UDP_RCV:
	case NB_HOOK_ICMP_RCV:
	case NB_HOOK_IP_QUEUE_XMIT:
	case NB_HOOK_IP_OUTPUT:
		return 4;
	case NB_HOOK_IPV6_RCV:
	case NB_HOOK_IP6_INPUT:
	case NB_HOOK_IP6_FORWARD:
	case NB_HOOK_TCP_V6_RCV:
	case NB_HOOK_UDPV6_RCV:
	case NB_HOOK_ICMPV6_RCV:
	case NB_HOOK_IP6_XMIT:
	case NB_HOOK_IP6_OUTPUT:
		return 6;
	}
	return 0;
}

/* Extra facts a backend knows beyond the skb. */
struct nb_extra {
	__u64 location;
	__u32 drop_reason;
	__u32 netns;            /* 0: from the skb */
	__u32 ifindex;          /* 0: from the skb */
	__u16 flags;            /* NB_F_NF / NB_F_DROP */
	__u8 nf_hook;
	__u8 verdict;
	__u8 family;            /* 0: from the hook or skb->protocol */
	__u8 stack;             /* capture a call stack (if cfg.want_stack) */
	__u8 direct;            /* skb is a BTF pointer: plain loads (see NB_RD) */
	struct sock *sk;
	/* direct: skb->dev and skb->sk, read at the program's entry (nb_skb_links) */
	struct net_device *skb_dev;
	struct sock *skb_sk;
};

/*
 * The skb's pointer fields, for programs whose skb is a BTF pointer: read once, at the
 * program's entry through nb_untrusted (see there), where the verifier walks them once and
 * the kfunc call clobbers no live register.
 */
static __always_inline void nb_skb_links(struct nb_extra *x, struct sk_buff *skb)
{
	struct sk_buff *u = nb_untrusted(skb, struct sk_buff);

	x->skb_dev = u->dev;
	x->skb_sk = u->sk;
}


/* Where the packet is: its interface and network namespace, what the filter may look at. */
struct nb_owner {
	__u32 ifindex;
	__u32 netns;
};

/* The skb's socket: given by the hook (kprobe/fentry on a transmit function) or skb->sk. */
struct nb_sock {
	__u32 netns;
	__u8 state;
	bool present;
};

/*
 * Direct (BTF pointer) programs load the pointer fields of each group here
 * in one straight line before any branch: fewer paths for the verifier to
 * walk. A NULL link simply reads as 0 (the JIT guards these loads, all
 * through untrusted pointers). Probe reads (kprobe) follow the links only
 * where they exist.
 */
static __always_inline void nb_sock_of(struct nb_sock *f, struct sk_buff *skb, const struct nb_extra *x)
{
	if (x->direct && !x->sk) {
		struct sock *sk = x->skb_sk;

		/* no socket on a received packet, and maybe no net yet: both may be NULL */
		f->present = sk != NULL;
		f->netns = 0;
		f->state = 0;
		if (sk) {
			struct net *net = sk->__sk_common.skc_net.net;

			f->netns = net ? net->ns.inum : 0;
			f->state = sk->__sk_common.skc_state;
		}
		return;
	}
	/* an sk passed as an argument (kprobe) is a plain number: probe reads */
	struct sock *sk = x->sk ? x->sk : NB_RD(x->direct, skb->sk, BPF_CORE_READ(skb, sk));

	__builtin_memset(f, 0, sizeof(*f));
	if (sk) {
		f->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
		f->state = BPF_CORE_READ(sk, __sk_common.skc_state);
		f->present = true;
	}
}

/*
 * The interface and namespace: netfilter's hook state names both (x); else
 * the skb's device, then the interface it arrived on, then the socket's
 * namespace (early on transmit there is no device yet). Nothing of the
 * socket is read when the device answers: it matters to the event only
 * after the filter (nb_tcp_state).
 */
static __always_inline void nb_owner_of(struct nb_owner *o, struct sk_buff *skb, const struct nb_extra *x)
{
	__u32 ifindex, netns;

	o->ifindex = x->ifindex;
	o->netns = x->netns;
	if (o->ifindex && o->netns)
		return;
	if (x->direct && !x->sk) {
		struct net_device *dev = x->skb_dev;
		struct net *net = dev->nd_net.net;

		ifindex = dev->ifindex;
		netns = net ? net->ns.inum : 0;
	} else {
		struct net_device *dev = NB_RD(x->direct, skb->dev, BPF_CORE_READ(skb, dev));

		ifindex = dev ? BPF_CORE_READ(dev, ifindex) : 0;
		netns = dev ? BPF_CORE_READ(dev, nd_net.net, ns.inum) : 0;
	}
	if (!o->ifindex)
		o->ifindex = ifindex ? ifindex : NB_RD(x->direct, skb->skb_iif, BPF_CORE_READ(skb, skb_iif));
	if (!o->netns)
		o->netns = netns;
	if (!o->netns) {
		struct nb_sock f;

		nb_sock_of(&f, skb, x);
		o->netns = f.netns;
	}
}

/* What the first stage of nb_build learnt that the second one needs. */
struct nb_stage {
	struct nb_owner o;
	struct nb_pkt pkt;
	bool l4_done;           /* the transport header was read before the filter */
};

/*
 * Stored in map memory and loaded back, a value is unknown to the verifier
 * (it does not track map memory). NB_PUT every value to a slot of its own
 * first, then NB_GET them all: independent stores and loads, a few cycles in
 * all (one slot for all would chain each load to the store before it).
 */
#define NB_PUT(r, i, v) (((volatile __u64 *)(r)->forget)[i] = (v))
#define NB_GET(r, i, v) ((v) = ((volatile __u64 *)(r)->forget)[i])
/* FIELDS(F, r): F(r, slot, lvalue) for each value (lists below, over the caller's st or x) */
#define NB_FORGET(r, FIELDS)                                                     \
	do {                                                                     \
		FIELDS(NB_PUT, r);                                               \
		FIELDS(NB_GET, r);                                               \
	} while (0)
#define NB_OWNER_FIELDS(F, r)                                                    \
	F(r, 0, st->o.ifindex); F(r, 1, st->o.netns)
#define NB_STAGE_FIELDS(F, r)                                                    \
	F(r, 0, st->pkt.v.lin_end); F(r, 1, st->pkt.l3); F(r, 2, st->pkt.l4);     \
	F(r, 3, st->pkt.l4_bytes); F(r, 4, st->pkt.mh); F(r, 5, st->pkt.proto);   \
	F(r, 6, st->pkt.l2); F(r, 7, st->l4_done)
#define NB_HOOK_FIELDS(F, r)                                                     \
	F(r, 0, x->family); F(r, 1, x->ifindex); F(r, 2, x->netns); F(r, 3, x->nf_hook)

/*
 * First stage: zero ev and fill only what the filter looks at (addresses,
 * ports, interface, namespace), so that a packet the filter rejects costs
 * one header read. Returns whether the filter matched.
 */
static __always_inline bool nb_build_filtered(struct nb_record *r, struct nb_stage *st, struct sk_buff *skb,
					      __u32 hook, const struct nb_extra *x)
{
	__u8 family = x->family ? x->family : nb_hook_family(hook);
	struct nb_event *ev = &r->ev;

	nb_owner_of(&st->o, skb, x);
	/* its NULL checks forked the state: one state again before the parse (see nb_stage_forget) */
	NB_FORGET(r, NB_OWNER_FIELDS);
	__builtin_memset(ev, 0, sizeof(*ev));
	nb_parse_skb(ev, &st->pkt, skb, nb_hook_hints(hook), family, x->sk, x->direct);
	ev->ifindex = st->o.ifindex;
	ev->netns = st->o.netns;
	/* the transport header costs a read: before the filter only if it asks for ports */
	st->l4_done = nb_filter_uses_ports();
	if (st->l4_done && st->pkt.l4)
		nb_parse_l4(ev, &st->pkt.v, st->pkt.l4, st->pkt.l4_bytes);
	/* a dynamic filter: its loop here, one call (nb_filter_run) less per packet */
	if (filter_dynamic)
		return nb_dyn_filter_match(ev);
	return nb_filter_run(ev, &r->fst);
}

/*
 * The socket's TCP state. A veth hands the sender's socket to the peer
 * namespace until demux: a state from another namespace is not this
 * packet's connection as seen here.
 */
static __always_inline void nb_tcp_state(struct nb_event *ev, struct sk_buff *skb, const struct nb_extra *x)
{
	struct nb_sock f;

	nb_sock_of(&f, skb, x);
	if (f.present && f.netns == ev->netns) {
		ev->tcp_state = f.state;
		ev->flags |= NB_F_TCP_STATE;
	}
}

/* The current task's tgid and name, with plain loads through its BTF pointer (two helper calls less). */
static __always_inline __u32 nb_task_of(char comm[NB_COMM_LEN])
{
	struct task_struct *t = bpf_get_current_task_btf();

	__builtin_memcpy(comm, t->comm, NB_COMM_LEN);
	return t->tgid;
}

/*
 * Second stage, for a packet the filter kept: the rest of the event. ev may
 * be another buffer than the first stage's (a ring buffer record holding a
 * copy of it); st is the first stage's.
 */
static __always_inline void nb_build_rest(struct nb_event *ev, const struct nb_stage *st, struct sk_buff *skb,
					  __u32 hook, const struct nb_extra *x)
{
	if (!st->l4_done && st->pkt.l4)
		nb_parse_l4(ev, &st->pkt.v, st->pkt.l4, st->pkt.l4_bytes);
	ev->ts_ns = bpf_ktime_get_ns();
	ev->skb = (__u64)skb;
	ev->hook = hook;
	ev->cpu = bpf_get_smp_processor_id();
	ev->pid = nb_task_of(ev->comm);
	nb_parse_l2(ev, &st->pkt);
	if (ev->ip_proto == IPPROTO_TCP)
		nb_tcp_state(ev, skb, x);
	ev->flags |= x->flags;
	ev->nf_hook = x->nf_hook;
	ev->verdict = x->verdict;
	ev->drop_reason = x->drop_reason;
	ev->location = x->location;
}

/*
 * The verifier walks what follows the filter once for every distinct state
 * the parse leaves behind (the branches it took, with header offsets known
 * on some paths and not on others): tp_netif_rx, 1,137 instructions, took
 * 14,686 steps to verify. Passed through map memory, the stage's scalars
 * become unknown to it, the paths reach the second stage in one state, and
 * it is walked once. Done here, after nb_owner_of and for netfilter's hook
 * description, tp_netif_rx takes 2,071 steps.
 * The second stage checks every offset it reads at anyway (nb_read); at run
 * time, for a packet the filter kept, this costs a store and a load each.
 */
static __always_inline void nb_stage_forget(struct nb_stage *st, struct nb_record *r)
{
	NB_FORGET(r, NB_STAGE_FIELDS);
}

/* Both stages into r->ev. Returns whether the filter matched (the event is complete only then). */
static __always_inline bool nb_build(struct nb_record *r, struct sk_buff *skb, __u32 hook,
				     const struct nb_extra *x)
{
	struct nb_stage st;

	if (!nb_build_filtered(r, &st, skb, hook, x))
		return false;
	nb_stage_forget(&st, r);
	nb_build_rest(&r->ev, &st, skb, hook, x);
	return true;
}

/*
 * Wake the reader once per batch: when the record that brought the backlog
 * to avail bytes (its own size + 8 header bytes included) crossed
 * cfg.wakeup_bytes. Waking on every record above the threshold cost a wakeup
 * interrupt per event while the reader was busy; the reader also polls with
 * a short timeout, so a backlog below the threshold is never stranded.
 */
static __always_inline __u64 nb_wakeup_crossed(__u64 avail, __u64 size)
{
	__u32 want = cfg.wakeup_bytes;

	return (avail >= want && avail < want + size + 8) ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

/* For bpf_ringbuf_output: the backlog before the record goes in. */
static __always_inline __u64 nb_wakeup_flags(__u64 size)
{
	if (!cfg.wakeup_bytes)
		return 0;       /* the kernel's own policy: wake when the reader caught up */
	return nb_wakeup_crossed(bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) + size + 8, size);
}

/* For bpf_ringbuf_submit of a reserved record: the backlog already counts it. */
static __always_inline __u64 nb_wakeup_flags_reserved(__u64 size)
{
	if (!cfg.wakeup_bytes)
		return 0;
	return nb_wakeup_crossed(bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA), size);
}

/* NB_CNT_SUBMITTED, or NB_CNT_LOST when the ring buffer is full. */
static __always_inline __u32 nb_output(void *data, __u64 size)
{
	return bpf_ringbuf_output(&events, data, size, nb_wakeup_flags(size)) ? NB_CNT_LOST : NB_CNT_SUBMITTED;
}

/* Struct assignment would become a memmove call, which BPF lacks. */
#define NB_COPY_WORDS(dst, src)                                                  \
	do {                                                                     \
		__u64 *d_ = (__u64 *)(dst);                                      \
		const __u64 *s_ = (const __u64 *)(src);                          \
		int k_;                                                          \
		_Static_assert(sizeof(*(dst)) % 8 == 0, "whole words");          \
		_Pragma("clang loop unroll(full)")                               \
		for (k_ = 0; k_ < sizeof(*(dst)) / 8; k_++)                      \
			d_[k_] = s_[k_];                                         \
	} while (0)

/* A per-CPU scratch record for this nesting level, held until nb_slot_release. */
struct nb_slot {
	struct nb_scratch *s;
	__u32 d;
};

/* NULL when every level is taken (counted LOST). */
static __always_inline struct nb_record *nb_slot_take(struct nb_slot *slot)
{
	__u32 zero = 0, d;
	struct nb_scratch *s = bpf_map_lookup_elem(&scratch, &zero);

	if (!s)
		return NULL;
	d = s->h.depth;
	if (d >= NB_NEST) {
		nb_count(NB_CNT_LOST);
		return NULL;
	}
	s->h.depth = d + 1;
	barrier_var(d);
	slot->s = s;
	slot->d = d;
	return &s->rec[d & (NB_NEST - 1)];
}

static __always_inline void nb_slot_release(const struct nb_slot *slot)
{
	slot->s->h.depth = slot->d;
}

/* Counted in the slot's level: only its holder writes there (see enum nb_counter). */
static __always_inline void nb_slot_count(const struct nb_slot *slot, __u32 which)
{
	slot->s->h.count[slot->d & (NB_NEST - 1)][which] += 1;
}

/*
 * The common path of every hook: count, build, filter, emit. The first
 * stage and the filter work in a scratch slot; a kept event then reserves
 * its ring buffer record, which receives a copy of the first stage, and the
 * second stage fills it in place. A full ring buffer therefore costs no
 * second stage (under a flood most events are lost: they cost the least).
 * Drop events with a call stack have a variable size, which
 * bpf_ringbuf_reserve cannot take: they are built whole in the slot and
 * copied by bpf_ringbuf_output.
 */
static __always_inline int nb_handle(void *ctx, struct sk_buff *skb, __u32 hook, struct nb_extra *x)
{
	struct nb_stage st;
	struct nb_slot slot;
	struct nb_record *r;
	struct nb_event *ev;
	__u64 size = sizeof(struct nb_event);

	if (!skb)
		return 0;
	if (x->direct)
		nb_skb_links(x, skb);   /* at the program's entry: nothing else is live yet */
	r = nb_slot_take(&slot);
	if (!r)
		return 0;
	/* netbee's own transmissions count as filtered (after the filter, like any rejected packet) */
	if (!nb_build_filtered(r, &st, skb, hook, x) ||
	    ((nb_hook_hints(hook) & HK_TX) && self_pid && bpf_get_current_task_btf()->tgid == self_pid)) {
		nb_slot_count(&slot, NB_CNT_FILTERED);
		goto out;
	}
	nb_stage_forget(&st, r);
	if (x->stack && cfg.want_stack) {
		long n;

		nb_build_rest(&r->ev, &st, skb, hook, x);
		n = bpf_get_stack(ctx, r->stack, sizeof(r->stack), 0);
		if (n > 0) {
			r->ev.stack_depth = n / sizeof(__u64);
			r->ev.flags |= NB_F_STACK;
			size += n & (sizeof(r->stack) - 8);
			if (n >= sizeof(r->stack))
				size = sizeof(r->ev) + sizeof(r->stack);
		}
		nb_slot_count(&slot, nb_output(r, size));
		goto out;
	}
	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		nb_slot_count(&slot, NB_CNT_LOST);
		goto out;
	}
	NB_COPY_WORDS(ev, &r->ev);
	nb_build_rest(ev, &st, skb, hook, x);
	bpf_ringbuf_submit(ev, nb_wakeup_flags_reserved(sizeof(*ev)));
	nb_slot_count(&slot, NB_CNT_SUBMITTED);
out:
	nb_slot_release(&slot);
	return 0;
}

static __always_inline int nb_on_skb(void *ctx, struct sk_buff *skb, __u32 hook, bool direct)
{
	struct nb_extra x = { .direct = direct };

	return nb_handle(ctx, skb, hook, &x);
}

static __always_inline int nb_on_skb_sk(void *ctx, struct sk_buff *skb, struct sock *sk, __u32 hook,
					 bool direct)
{
	struct nb_extra x = { .sk = sk, .direct = direct };

	return nb_handle(ctx, skb, hook, &x);
}

static __always_inline int nb_on_drop(void *ctx, struct sk_buff *skb, __u32 reason, __u64 location,
				       bool direct)
{
	struct nb_extra x = {
		.location = location, .drop_reason = reason, .flags = NB_F_DROP, .stack = 1, .direct = direct,
	};

	return nb_handle(ctx, skb, NB_HOOK_KFREE_SKB, &x);
}

/* ------------------------------------------------------------------------
 * Netfilter packets in flight (per CPU, LIFO: hooks nest only by interrupt
 * or by packets created inside a hook, like an nft reject's reply).
 */

static __always_inline struct nb_flight_stack *nb_flights(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&nf_flight, &zero);
}

/*
 * The flight stack's functions that report, move or add entries are global:
 * the verifier checks each once, on its own, instead of at every place the
 * unrolled loops reach them, in every state the packet's parse left there
 * (nf_entry took 28,462 steps to verify, most of them here; now 4,204).
 * Their arguments are numbers and pointers into map memory, which is all a
 * global function takes.
 */
__noinline int nb_flight_emit(struct nb_flight_stack *st, __u32 i, __u32 verdict, __u32 reason, __u64 location)
{
	struct nb_flight *f;

	if (!st || i >= NB_NF_DEPTH)
		return 0;
	barrier_var(i);
	f = &st->e[i & (NB_NF_DEPTH - 1)];
	if (!f->match)
		return 0;       /* counted FILTERED at entry */
	f->ev.verdict = verdict;
	if (verdict == NB_VERDICT_DROP && location) {
		f->ev.drop_reason = reason;
		f->ev.location = location;
		f->ev.flags |= NB_F_DROP;
	}
	nb_count(nb_output(&f->ev, sizeof(f->ev)));
	return 0;
}

static __always_inline void nb_flight_copy(struct nb_flight *dst, const struct nb_flight *src)
{
	NB_COPY_WORDS(dst, src);
}

/* Remove entry i, reporting it with verdict; entries above slide down. */
__noinline int nb_flight_remove(struct nb_flight_stack *st, __u32 i, __u32 verdict)
{
	__u32 j, d;

	if (!st)
		return 0;
	d = st->depth;
	nb_flight_emit(st, i, verdict, 0, 0);
#pragma clang loop unroll(full)
	for (j = 0; j < NB_NF_DEPTH - 1; j++) {
		if (j < i)
			continue;
		if (j + 1 >= d)
			break;
		nb_flight_copy(&st->e[j], &st->e[j + 1]);
	}
	if (d > 0)
		st->depth = d - 1;
	return 0;
}

/* Index of skb in the stack, NB_NF_DEPTH if absent (searched from the top). */
static __always_inline __u32 nb_flight_find(struct nb_flight_stack *st, __u64 skb)
{
	__u32 d = st->depth;
	int i;

#pragma clang loop unroll(full)
	for (i = NB_NF_DEPTH - 1; i >= 0; i--) {
		if (i < d && st->e[i].skb == skb)
			return i;
	}
	return NB_NF_DEPTH;
}

/* Pop everything above index i as STOLEN (entered after it, never left). */
static __always_inline void nb_flight_unwind_to(struct nb_flight_stack *st, __u32 i)
{
	int j;

#pragma clang loop unroll(full)
	for (j = NB_NF_DEPTH - 1; j >= 0; j--) {
		if (j > i && j < st->depth) {
			nb_flight_emit(st, j, NB_VERDICT_STOLEN, 0, 0);
			st->depth = j;
		}
	}
}

/* Resolve entry i with verdict and pop it together with what sits above. */
__noinline int nb_flight_resolve(struct nb_flight_stack *st, __u32 i, __u32 verdict, __u32 reason, __u64 location)
{
	if (!st || i >= NB_NF_DEPTH)
		return 0;
	nb_flight_unwind_to(st, i);
	nb_flight_emit(st, i, verdict, reason, location);
	st->depth = i;
	return 0;
}

#define NB_ENTER_MATCH 1        /* ev holds an event the filter kept */
#define NB_ENTER_TIDY  2        /* sweep the stack first */
#define NB_ENTER_HOOK(how) ((how) >> 8)

/* Push skb's entry (with ev's event when NB_ENTER_MATCH) at time now; how: NB_ENTER_* | hook << 8
 * (BPF calls take five arguments). */
__noinline int nb_flight_enter(struct nb_flight_stack *st, const struct nb_event *ev, __u64 skb, __u64 now,
			       __u32 how)
{
	struct nb_flight *f;
	__u32 d;

	if (!st || !ev)
		return 0;
	if ((how & NB_ENTER_TIDY) && st->depth) {
		bool fresh = false;
		int j;

		/* the same skb again: its previous hook kept it (queue/steal) and reinjected it */
		d = nb_flight_find(st, skb);
		if (d < NB_NF_DEPTH)
			nb_flight_remove(st, d, NB_VERDICT_STOLEN);
		/* stale tops left their hook unseen long ago; stop at the first fresh one,
		 * which may be a packet we are nested in */
#pragma clang loop unroll(full)
		for (j = NB_NF_DEPTH - 1; j >= 0; j--) {
			if (fresh || j >= st->depth)
				continue;
			if (now - st->e[j].ts > NB_NF_STALE_NS) {
				nb_flight_emit(st, j, NB_VERDICT_STOLEN, 0, 0);
				st->depth = j;
			} else {
				fresh = true;
			}
		}
	}
	if (st->depth >= NB_NF_DEPTH)
		nb_flight_remove(st, 0, NB_VERDICT_STOLEN);
	d = st->depth;
	if (d >= NB_NF_DEPTH) {         /* only if interrupts refilled it meanwhile */
		if (how & NB_ENTER_MATCH)
			nb_count(NB_CNT_LOST);
		return 0;
	}
	barrier_var(d);
	f = &st->e[d & (NB_NF_DEPTH - 1)];
	/* claim the slot before filling it: an interrupt may push above it meanwhile */
	f->skb = skb;
	f->ts = now;
	f->match = 0;
	f->ev.hook = NB_ENTER_HOOK(how);
	st->depth = d + 1;
	if (how & NB_ENTER_MATCH) {
		NB_COPY_WORDS(&f->ev, ev);
		f->match = 1;
	}
	return 0;
}

/*
 * A packet enters a hook; x describes the hook. The event is built in a
 * scratch slot first and pushed only if the filter keeps it, so a packet
 * the filter rejects never touches the stack. placeholder: push rejected
 * packets too, as entries without an event, for a return probe that pairs
 * by nesting order (kretprobe) rather than by skb.
 */
static __always_inline void nb_flight_push(struct sk_buff *skb, __u32 hook, struct nb_extra *x, bool tidy,
					   bool placeholder)
{
	struct nb_flight_stack *st;
	struct nb_slot slot;
	struct nb_record *r;
	__u64 now, skb_id;
	bool match;

	r = nb_slot_take(&slot);
	if (!r)
		return;
	/* the hook's description took branches (family by pf, the device): one state from here on */
	NB_FORGET(r, NB_HOOK_FIELDS);
	match = nb_build(r, skb, hook, x);
	if (!match) {
		nb_slot_count(&slot, NB_CNT_FILTERED);
		if (!placeholder)
			goto out;       /* never touches the stack: the common case costs no lookup of it */
		now = bpf_ktime_get_ns();
	} else {
		now = r->ev.ts_ns;
	}
	st = nb_flights();
	if (!st) {
		if (match)
			nb_slot_count(&slot, NB_CNT_LOST);
		goto out;
	}
	/* a number: a global function refuses a BTF pointer */
	NB_PUT(r, 0, (__u64)skb);
	NB_GET(r, 0, skb_id);
	nb_flight_enter(st, &r->ev, skb_id, now,
			hook << 8 | (match ? NB_ENTER_MATCH : 0) | (tidy ? NB_ENTER_TIDY : 0));
out:
	nb_slot_release(&slot);
}

/* ---------------------------------------------------------------- kprobe */

#define KP_ARG1(fn, hook)                                                        \
	SEC("kprobe/" #fn) int kp_##fn(struct pt_regs *ctx)                      \
	{ return nb_on_skb(ctx, (struct sk_buff *)PT_REGS_PARM1(ctx), hook, false); }

KP_ARG1(netif_rx, NB_HOOK_NETIF_RX)
KP_ARG1(ip_rcv, NB_HOOK_IP_RCV)
KP_ARG1(ip_local_deliver, NB_HOOK_IP_LOCAL_DELIVER)
KP_ARG1(ip_forward, NB_HOOK_IP_FORWARD)
KP_ARG1(tcp_v4_rcv, NB_HOOK_TCP_V4_RCV)
KP_ARG1(udp_rcv, NB_HOOK_UDP_RCV)
KP_ARG1(icmp_rcv, NB_HOOK_ICMP_RCV)
KP_ARG1(dev_queue_xmit, NB_HOOK_DEV_QUEUE_XMIT)
KP_ARG1(ipv6_rcv, NB_HOOK_IPV6_RCV)
KP_ARG1(ip6_input, NB_HOOK_IP6_INPUT)
KP_ARG1(ip6_forward, NB_HOOK_IP6_FORWARD)
KP_ARG1(tcp_v6_rcv, NB_HOOK_TCP_V6_RCV)
KP_ARG1(udpv6_rcv, NB_HOOK_UDPV6_RCV)
KP_ARG1(icmpv6_rcv, NB_HOOK_ICMPV6_RCV)

/* (sk, skb, ...) */
#define KP_SK_SKB(fn, hook)                                                      \
	SEC("kprobe/" #fn) int kp_##fn(struct pt_regs *ctx)                      \
	{ return nb_on_skb_sk(ctx, (struct sk_buff *)PT_REGS_PARM2(ctx),         \
			      (struct sock *)PT_REGS_PARM1(ctx), hook, false); }

KP_SK_SKB(tcp_transmit_skb, NB_HOOK_TCP_TRANSMIT_SKB)
KP_SK_SKB(ip_queue_xmit, NB_HOOK_IP_QUEUE_XMIT)
KP_SK_SKB(ip6_xmit, NB_HOOK_IP6_XMIT)

/* (net, sk, skb) */
#define KP_ARG3(fn, hook)                                                        \
	SEC("kprobe/" #fn) int kp_##fn(struct pt_regs *ctx)                      \
	{ return nb_on_skb(ctx, (struct sk_buff *)PT_REGS_PARM3(ctx), hook, false); }

KP_ARG3(ip_output, NB_HOOK_IP_OUTPUT)
KP_ARG3(ip6_output, NB_HOOK_IP6_OUTPUT)

/* At function entry the return address is on top of the stack: the caller that freed it. */
static __always_inline __u64 kp_return_address(struct pt_regs *ctx)
{
	__u64 ret = 0;

	bpf_probe_read_kernel(&ret, sizeof(ret), (void *)PT_REGS_SP(ctx));
	return ret;
}

SEC("kprobe/kfree_skb_reason")
int kp_kfree_skb_reason(struct pt_regs *ctx)
{
	return nb_on_drop(ctx, (struct sk_buff *)PT_REGS_PARM1(ctx), (__u32)PT_REGS_PARM2(ctx),
			  kp_return_address(ctx), false);
}

/* 6.12+: sk_skb_reason_drop(sk, skb, reason) */
SEC("kprobe/sk_skb_reason_drop")
int kp_sk_skb_reason_drop(struct pt_regs *ctx)
{
	return nb_on_drop(ctx, (struct sk_buff *)PT_REGS_PARM2(ctx), (__u32)PT_REGS_PARM3(ctx),
			  kp_return_address(ctx), false);
}

static __always_inline void nb_nf_slow_entry(struct sk_buff *skb, const struct nf_hook_state *state,
					     bool placeholder)
{
	struct nb_extra x = { .flags = NB_F_NF };
	struct net_device *dev;
	__u8 pf = BPF_CORE_READ(state, pf);

	x.nf_hook = BPF_CORE_READ(state, hook);
	x.family = pf == 2 ? 4 : pf == 10 ? 6 : 0;
	x.netns = BPF_CORE_READ(state, net, ns.inum);
	dev = BPF_CORE_READ(state, in);
	if (!dev)
		dev = BPF_CORE_READ(state, out);
	if (dev)
		x.ifindex = BPF_CORE_READ(dev, ifindex);
	nb_flight_push(skb, NB_HOOK_NF_HOOK_SLOW, &x, false, placeholder);
}

/* nf_hook_slow's return value: 1 accept, 0 stolen or queued, <0 (-EPERM) drop. */
static __always_inline __u8 nb_nf_verdict(int ret)
{
	if (ret == 1)
		return NB_VERDICT_ACCEPT;
	if (ret < 0)
		return NB_VERDICT_DROP;
	return NB_VERDICT_STOLEN;
}

SEC("kprobe/nf_hook_slow")
int kp_nf_hook_slow(struct pt_regs *ctx)
{
	/* the kretprobe pairs by nesting order: every call needs its entry */
	nb_nf_slow_entry((struct sk_buff *)PT_REGS_PARM1(ctx), (const struct nf_hook_state *)PT_REGS_PARM2(ctx), true);
	return 0;
}

/* A kretprobe has no arguments: the innermost call on this CPU is the one returning. */
SEC("kretprobe/nf_hook_slow")
int kr_nf_hook_slow(struct pt_regs *ctx)
{
	struct nb_flight_stack *st = nb_flights();
	__u32 d;

	if (!st || st->depth == 0)
		return 0;
	d = st->depth - 1;
	nb_flight_resolve(st, d, nb_nf_verdict((int)PT_REGS_RC(ctx)), 0, 0);
	return 0;
}

/* ---------------------------------------------------------------- fentry */

#define FE_ARG1(fn, hook)                                                        \
	SEC("fentry/" #fn) int BPF_PROG(fe_##fn, struct sk_buff *skb)             \
	{ return nb_on_skb(ctx, skb, hook, true); }

FE_ARG1(netif_rx, NB_HOOK_NETIF_RX)
FE_ARG1(ip_rcv, NB_HOOK_IP_RCV)
FE_ARG1(ip_local_deliver, NB_HOOK_IP_LOCAL_DELIVER)
FE_ARG1(ip_forward, NB_HOOK_IP_FORWARD)
FE_ARG1(tcp_v4_rcv, NB_HOOK_TCP_V4_RCV)
FE_ARG1(udp_rcv, NB_HOOK_UDP_RCV)
FE_ARG1(icmp_rcv, NB_HOOK_ICMP_RCV)
FE_ARG1(dev_queue_xmit, NB_HOOK_DEV_QUEUE_XMIT)
FE_ARG1(ipv6_rcv, NB_HOOK_IPV6_RCV)
FE_ARG1(ip6_input, NB_HOOK_IP6_INPUT)
FE_ARG1(ip6_forward, NB_HOOK_IP6_FORWARD)
FE_ARG1(tcp_v6_rcv, NB_HOOK_TCP_V6_RCV)
FE_ARG1(udpv6_rcv, NB_HOOK_UDPV6_RCV)
FE_ARG1(icmpv6_rcv, NB_HOOK_ICMPV6_RCV)

#define FE_SK_SKB(fn, hook)                                                      \
	SEC("fentry/" #fn) int BPF_PROG(fe_##fn, struct sock *sk, struct sk_buff *skb) \
	{ return nb_on_skb_sk(ctx, skb, sk, hook, true); }

FE_SK_SKB(tcp_transmit_skb, NB_HOOK_TCP_TRANSMIT_SKB)
FE_SK_SKB(ip_queue_xmit, NB_HOOK_IP_QUEUE_XMIT)
FE_SK_SKB(ip6_xmit, NB_HOOK_IP6_XMIT)

#define FE_ARG3(fn, hook)                                                        \
	SEC("fentry/" #fn) int BPF_PROG(fe_##fn, void *net, struct sock *sk, struct sk_buff *skb) \
	{ return nb_on_skb(ctx, skb, hook, true); }

FE_ARG3(ip_output, NB_HOOK_IP_OUTPUT)
FE_ARG3(ip6_output, NB_HOOK_IP6_OUTPUT)

SEC("fentry/nf_hook_slow")
int BPF_PROG(fe_nf_hook_slow, struct sk_buff *skb, const struct nf_hook_state *state)
{
	nb_nf_slow_entry(skb, state, false);       /* fexit pairs by skb */
	return 0;
}

/* fexit knows the skb: resolve exactly its entry (not merely the innermost). */
SEC("fexit/nf_hook_slow")
int BPF_PROG(fx_nf_hook_slow, struct sk_buff *skb, const struct nf_hook_state *state, void *e,
	     unsigned int s, int ret)
{
	struct nb_flight_stack *st = nb_flights();

	if (st)
		nb_flight_resolve(st, nb_flight_find(st, (__u64)skb), nb_nf_verdict(ret), 0, 0);
	return 0;
}

/*
 * The fentry backend takes drops from tp_btf/kfree_skb (below): it exists on
 * every kernel that allows fentry and gives the freeing location, which an
 * fentry program cannot read.
 */

/* ------------------------------------------------------------ tracepoint */

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(tp_netif_receive_skb, struct sk_buff *skb)
{
	return nb_on_skb(ctx, skb, NB_HOOK_NETIF_RECEIVE_SKB, true);
}

SEC("tp_btf/netif_rx")
int BPF_PROG(tp_netif_rx, struct sk_buff *skb)
{
	return nb_on_skb(ctx, skb, NB_HOOK_NETIF_RX, true);
}

SEC("tp_btf/net_dev_queue")
int BPF_PROG(tp_net_dev_queue, struct sk_buff *skb)
{
	return nb_on_skb(ctx, skb, NB_HOOK_DEV_QUEUE_XMIT, true);
}

SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(tp_net_dev_start_xmit, struct sk_buff *skb)
{
	return nb_on_skb(ctx, skb, NB_HOOK_NET_DEV_START_XMIT, true);
}

/*
 * kfree_skb(skb, location, reason[, rx_sk]). For a packet in flight in a
 * netfilter hook on this CPU:
 * - reason NETFILTER_DROP: the hook dropped it (nftables and iptables
 *   verdict DROP): the bracket reports verdict DROP at that hook;
 * - any other reason: the hook had taken it (queued, defragmentation) and it
 *   is freed now, possibly much later: verdict STOLEN (the kfree event says
 *   why it died; a failed NFQUEUE frees with NOT_SPECIFIED at nf_queue).
 * Every free is also reported on its own, with reason and stack.
 * Known false positive, passed on unmarked for the application to judge:
 * ping echo replies are freed at ping_rcv with a non-consumed reason.
 */
SEC("tp_btf/kfree_skb")
int BPF_PROG(tp_kfree_skb, struct sk_buff *skb, void *location, unsigned int reason)
{
	struct nb_flight_stack *st = nb_flights();

	if (st && st->depth) {
		__u32 i = nb_flight_find(st, (__u64)skb);

		/* fentry's nf_hook_slow entries share the stack: fexit reports those */
		if (i < NB_NF_DEPTH && st->e[i & (NB_NF_DEPTH - 1)].ev.hook == NB_HOOK_NF_BRACKET) {
			if (reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NETFILTER_DROP))
				/* dropped inside its hook: what sits above it has finished */
				nb_flight_resolve(st, i, NB_VERDICT_DROP, reason, (__u64)location);
			else
				/* freed outside its hook: packets above it may be legitimately in flight */
				nb_flight_remove(st, i, NB_VERDICT_STOLEN);
		}
	}
	return nb_on_drop(ctx, skb, reason, (__u64)location, true);
}

/* A packet in flight that is consumed was taken by its hook (defragmentation, queue). */
SEC("tp_btf/consume_skb")
int BPF_PROG(tp_consume_skb, struct sk_buff *skb)
{
	struct nb_flight_stack *st = nb_flights();
	__u32 i;

	if (!st || !st->depth)
		return 0;
	i = nb_flight_find(st, (__u64)skb);
	if (i < NB_NF_DEPTH && st->e[i & (NB_NF_DEPTH - 1)].ev.hook == NB_HOOK_NF_BRACKET)
		nb_flight_remove(st, i, NB_VERDICT_STOLEN);
	return 0;
}

/* ------------------------------------------------------------- netfilter */

static __always_inline void nb_nf_extra(struct nb_extra *x, const struct nf_hook_state *state)
{
	/* pointer loads in a straight line, before any branch (see nb_sock_of); a NULL device
	 * reads as ifindex 0 */
	const struct nf_hook_state *u = nb_untrusted(state, struct nf_hook_state);
	struct net_device *in = u->in, *out = u->out;
	__u32 in_ifindex = in->ifindex, out_ifindex = out->ifindex;
	__u8 pf = state->pf;

	x->netns = u->net->ns.inum;
	x->flags = NB_F_NF;
	x->direct = 1;
	x->nf_hook = state->hook;
	x->ifindex = in_ifindex ? in_ifindex : out_ifindex;
	x->family = pf == 2 ? 4 : pf == 10 ? 6 : 0;
}

/* Attached at priority INT_MIN+1 of each hook: the packet enters the hook. */
SEC("netfilter")
int nf_entry(struct bpf_nf_ctx *ctx)
{
	struct sk_buff *skb = ctx->skb;
	struct nb_extra x = {};

	nb_skb_links(&x, skb);
	nb_nf_extra(&x, ctx->state);
	nb_flight_push(skb, NB_HOOK_NF_BRACKET, &x, true, false);
	return 1;       /* NF_ACCEPT: observe, never decide */
}

/* Attached at priority INT_MAX-1: the packet got through every chain. */
SEC("netfilter")
int nf_exit(struct bpf_nf_ctx *ctx)
{
	struct nb_flight_stack *st = nb_flights();

	if (st && st->depth)
		nb_flight_resolve(st, nb_flight_find(st, (__u64)ctx->skb), NB_VERDICT_ACCEPT, 0, 0);
	return 1;
}
