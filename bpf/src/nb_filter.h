/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The in-kernel filter: a postfix program of at most NB_MAX_RULES entries in
 * cfg.rules, evaluated over a stack of booleans kept as bits of a u32 (bit 0
 * is the top). Userspace (netbee/filter.py) guarantees a well-formed program;
 * a malformed one can only give a wrong answer, never an unsafe access.
 *
 * cfg lives in .rodata and is frozen before load, so the verifier sees the
 * rule table as constants and walks only the rules actually configured.
 * Every read goes through the volatile object: casting the volatile away
 * would let clang fold the zero initialiser into the code.
 */
#ifndef NETBEE_FILTER_H
#define NETBEE_FILTER_H

#include "nb_parse.h"

/* cfg and filter_fields are defined in netbee.bpf.c before this header is included. */

struct nb_addrs {
	__u32 s[4];
	__u32 d[4];
};

static __always_inline bool nb_word_match(const volatile struct nb_rule *r, const __u32 *a, int j)
{
	return !((a[j] ^ *(const volatile __u32 *)&r->addr[4 * j]) & *(const volatile __u32 *)&r->mask[4 * j]);
}

static __always_inline bool nb_net_match(__u32 i, const __u32 *a, __u8 family)
{
	const volatile struct nb_rule *r = &cfg.rules[i];

	if (r->family != family)
		return false;
	if (!nb_word_match(r, a, 0))
		return false;
	if (family == 4)
		return true;
	return nb_word_match(r, a, 1) && nb_word_match(r, a, 2) && nb_word_match(r, a, 3);
}

static __always_inline bool nb_port_match(__u32 i, __u16 port)
{
	return port >= cfg.rules[i].lo && port <= cfg.rules[i].hi;
}

static __always_inline bool nb_term(__u32 i, const struct nb_event *ev, const struct nb_addrs *ad,
				    bool has_addr, bool has_ports)
{
	__u8 field = cfg.rules[i].field;

	switch (field) {
	case NB_FIELD_TRUE:
		return true;
	case NB_FIELD_FAMILY:
		return has_addr && ev->family == cfg.rules[i].lo;
	case NB_FIELD_PROTO:
		return has_addr && ev->ip_proto == cfg.rules[i].lo;
	case NB_FIELD_SRC_NET:
		return has_addr && nb_net_match(i, ad->s, ev->family);
	case NB_FIELD_DST_NET:
		return has_addr && nb_net_match(i, ad->d, ev->family);
	case NB_FIELD_ANY_NET:
		return has_addr && (nb_net_match(i, ad->s, ev->family) || nb_net_match(i, ad->d, ev->family));
	case NB_FIELD_SRC_PORT:
		return has_ports && nb_port_match(i, ev->sport);
	case NB_FIELD_DST_PORT:
		return has_ports && nb_port_match(i, ev->dport);
	case NB_FIELD_ANY_PORT:
		return has_ports && (nb_port_match(i, ev->sport) || nb_port_match(i, ev->dport));
	case NB_FIELD_IFINDEX:
		return ev->ifindex == cfg.rules[i].value;
	case NB_FIELD_NETNS:
		return ev->netns == cfg.rules[i].value;
	}
	return false;
}

/* Whether a term of the filter looks at ports (filter_fields: set by the loader, constant). */
static __always_inline bool nb_filter_uses_ports(void)
{
	return cfg.filter_len &&
	       (filter_fields & ((1u << NB_FIELD_SRC_PORT) | (1u << NB_FIELD_DST_PORT) | (1u << NB_FIELD_ANY_PORT)));
}

/*
 * st points into map memory on purpose: the verifier does not track values
 * stored there, so the paths through each term merge again at the loop
 * head (volatile keeps clang from caching it in a register). Kept in a
 * register, every combination of term outcomes would be a
 * distinct state and 32 rules would exceed the verifier's budget.
 */
static __always_inline bool nb_filter_match(const struct nb_event *ev, volatile __u32 *st)
{
	struct nb_addrs ad;
	bool has_addr = ev->flags & (NB_F_HAS_L3 | NB_F_FROM_SOCK);
	bool has_ports = has_addr && (ev->flags & (NB_F_HAS_L4 | NB_F_FROM_SOCK)) && nb_is_l4_ports(ev->ip_proto);
	__u32 i, n = cfg.filter_len;

	if (n == 0)
		return true;
	*st = 0;
	__builtin_memcpy(ad.s, ev->saddr, 16);
	__builtin_memcpy(ad.d, ev->daddr, 16);
#pragma clang loop unroll(disable)
	for (i = 0; i < NB_MAX_RULES; i++) {
		__u8 op;

		if (i >= n)
			break;
		op = cfg.rules[i].op;
		if (op == NB_OP_TERM) {
			*st = (*st << 1) | nb_term(i, ev, &ad, has_addr, has_ports);
		} else if (op == NB_OP_NOT) {
			*st ^= 1;
		} else if (op == NB_OP_REQUIRE) {
			/* a conjunct of the whole filter is false: nothing after it can change that */
			if (!(*st & 1))
				return false;
			*st >>= 1;
		} else {
			__u32 v = *st, b = v & 1, a = (v >> 1) & 1;

			*st = ((v >> 1) & ~1u) | (op == NB_OP_AND ? (a & b) : (a | b));
		}
	}
	return *st & 1;
}

/*
 * The filter as one BPF function of its own. The loader replaces this body
 * with straight-line code generated from the rules (netbee/filter_codegen.py):
 * that code reads only ev (r1), a pointer into the per-CPU scratch map value,
 * and returns 1 to keep the packet, 0 to drop it. The C body below is the
 * reference implementation and what runs when the loader leaves it (the
 * interpreter option, or a loader without the generator). noinline keeps it
 * a separate function in every program, so there is a body to replace.
 */
static __noinline int nb_filter_run(const struct nb_event *ev, volatile __u32 *st)
{
	return nb_filter_match(ev, st);
}

#endif
