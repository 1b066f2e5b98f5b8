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

/* cfg, filter_fields, filter_dynamic and dyn_filter are defined in netbee.bpf.c before this
 * header is included. */

/* ev's addresses as words (copied: in struct nb_event they are not word-aligned). */
struct nb_addrs {
	__u32 s[4];
	__u32 d[4];
};

static __always_inline void nb_addrs_of(struct nb_addrs *ad, const struct nb_event *ev)
{
	__builtin_memcpy(ad->s, ev->saddr, 16);
	__builtin_memcpy(ad->d, ev->daddr, 16);
}

static __always_inline bool nb_word_match(const volatile struct nb_rule *r, const __u32 *a, int j)
{
	return !((a[j] ^ *(const volatile __u32 *)&r->addr[4 * j]) & *(const volatile __u32 *)&r->mask[4 * j]);
}

static __always_inline bool nb_net_match(const volatile struct nb_rule *r, const __u32 *a, __u8 family)
{
	if (r->family != family)
		return false;
	if (!nb_word_match(r, a, 0))
		return false;
	if (family == 4)
		return true;
	return nb_word_match(r, a, 1) && nb_word_match(r, a, 2) && nb_word_match(r, a, 3);
}

static __always_inline bool nb_port_match(const volatile struct nb_rule *r, __u16 port)
{
	return port >= r->lo && port <= r->hi;
}

static __always_inline bool nb_term(const volatile struct nb_rule *r, const struct nb_event *ev,
				    const struct nb_addrs *ad, bool has_addr, bool has_ports)
{
	__u8 field = r->field;

	switch (field) {
	case NB_FIELD_TRUE:
		return true;
	case NB_FIELD_FAMILY:
		return has_addr && ev->family == r->lo;
	case NB_FIELD_PROTO:
		return has_addr && ev->ip_proto == r->lo;
	case NB_FIELD_SRC_NET:
		return has_addr && nb_net_match(r, ad->s, ev->family);
	case NB_FIELD_DST_NET:
		return has_addr && nb_net_match(r, ad->d, ev->family);
	case NB_FIELD_ANY_NET:
		return has_addr && (nb_net_match(r, ad->s, ev->family) || nb_net_match(r, ad->d, ev->family));
	case NB_FIELD_SRC_PORT:
		return has_ports && nb_port_match(r, ev->sport);
	case NB_FIELD_DST_PORT:
		return has_ports && nb_port_match(r, ev->dport);
	case NB_FIELD_ANY_PORT:
		return has_ports && (nb_port_match(r, ev->sport) || nb_port_match(r, ev->dport));
	case NB_FIELD_IFINDEX:
		return ev->ifindex == r->value;
	case NB_FIELD_NETNS:
		return ev->netns == r->value;
	}
	return false;
}

#define NB_PORT_FIELDS ((1u << NB_FIELD_SRC_PORT) | (1u << NB_FIELD_DST_PORT) | (1u << NB_FIELD_ANY_PORT))

/* Whether a term of the filter looks at ports (filter_fields: set by the loader, constant).
 * A dynamic filter reads them always: decided at run time, the choice would make the verifier
 * walk the rest of the program twice. */
static __always_inline bool nb_filter_uses_ports(void)
{
	if (filter_dynamic)
		return true;
	return cfg.filter_len && (filter_fields & NB_PORT_FIELDS);
}

/* One rule applied to the stack st: the new stack, or -1 when a REQUIRE found the whole filter
 * false (nothing after it can change that). */
static __always_inline __s64 nb_rule_apply(const volatile struct nb_rule *r, __u32 st, const struct nb_event *ev,
					   const struct nb_addrs *ad, bool has_addr, bool has_ports)
{
	__u8 op = r->op;
	__u32 a, b;

	if (op == NB_OP_TERM)
		return (st << 1) | nb_term(r, ev, ad, has_addr, has_ports);
	if (op == NB_OP_NOT)
		return st ^ 1;
	if (op == NB_OP_REQUIRE) {
		if (!(st & 1))
			return -1;
		return st >> 1;
	}
	b = st & 1;
	a = (st >> 1) & 1;
	return ((st >> 1) & ~1u) | (op == NB_OP_AND ? (a & b) : (a | b));
}

static __always_inline bool nb_has_addr(const struct nb_event *ev)
{
	return ev->flags & (NB_F_HAS_L3 | NB_F_FROM_SOCK);
}

static __always_inline bool nb_has_ports(const struct nb_event *ev)
{
	return nb_has_addr(ev) && (ev->flags & (NB_F_HAS_L4 | NB_F_FROM_SOCK)) && nb_is_l4_ports(ev->ip_proto);
}

#define NB_HAS_ADDR  1
#define NB_HAS_PORTS 2

/*
 * Rule i of the dynamic filter (dyn_filter) applied to st; ad and has (NB_HAS_*) are ev's,
 * found once per packet. A global function: the verifier checks it once, on its own, with the
 * rule unknown; inlined into the loop, every path through every unknown rule would be a state of
 * its own and 32 rules exceed the verifier's budget.
 */
__noinline __s64 nb_dyn_step(const struct nb_event *ev, const struct nb_addrs *ad, __u32 i, __u32 st, __u32 has)
{
	if (!ev || !ad || i >= NB_MAX_RULES)
		return -1;
	return nb_rule_apply(&dyn_filter.rules[i], st, ev, ad, has & NB_HAS_ADDR, has & NB_HAS_PORTS);
}

static __always_inline bool nb_dyn_filter_match(const struct nb_event *ev)
{
	__u32 i, n = dyn_filter.filter_len;
	__u32 has = (nb_has_addr(ev) ? NB_HAS_ADDR : 0) | (nb_has_ports(ev) ? NB_HAS_PORTS : 0);
	struct nb_addrs ad;
	__s64 st = 0;

	if (n == 0)
		return true;
	nb_addrs_of(&ad, ev);
#pragma clang loop unroll(disable)
	for (i = 0; i < NB_MAX_RULES; i++) {
		if (i >= n)
			break;
		st = nb_dyn_step(ev, &ad, i, st, has);
		if (st < 0)
			return false;
	}
	return st & 1;
}

/*
 * The rules of cfg (constants to the verifier). st points into map memory on
 * purpose: the verifier does not track values stored there, so the paths
 * through each term merge again at the loop head (volatile keeps clang from
 * caching it in a register). Kept in a register, every combination of term
 * outcomes would be a distinct state and 32 rules would exceed the
 * verifier's budget.
 */
static __always_inline bool nb_filter_match(const struct nb_event *ev, volatile __u32 *st)
{
	struct nb_addrs ad;
	bool has_addr = nb_has_addr(ev);
	bool has_ports = nb_has_ports(ev);
	__u32 i, n = cfg.filter_len;

	if (filter_dynamic)
		return nb_dyn_filter_match(ev);
	if (n == 0)
		return true;
	*st = 0;
	nb_addrs_of(&ad, ev);
#pragma clang loop unroll(disable)
	for (i = 0; i < NB_MAX_RULES; i++) {
		__s64 next;

		if (i >= n)
			break;
		next = nb_rule_apply(&cfg.rules[i], *st, ev, &ad, has_addr, has_ports);
		if (next < 0)
			return false;
		*st = next;
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
 * a separate function in every program, so there is a body to replace; the
 * loader then copies the generated body into the callers (netbee/loader/
 * inline.py), as a call and its return cost more than the filter itself.
 * A dynamic filter skips this function (nb_build_filtered): one call less.
 */
static __noinline int nb_filter_run(const struct nb_event *ev, volatile __u32 *st)
{
	return nb_filter_match(ev, st);
}

#endif
