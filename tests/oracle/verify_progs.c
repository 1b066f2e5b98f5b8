// SPDX-License-Identifier: GPL-2.0
/*
 * Development-only oracle: loads chosen programs of a BPF object with libbpf
 * so the verifier can be checked independently of NetBee's own loader.
 * Never shipped, never used at run time.
 *
 *   verify_progs OBJ [--stress] PROG...
 *
 * --stress fills cfg with 31 mixed filter rules (see tests/kernel/test_programs_verify.py
 * for an exact NB_MAX_RULES program), want_stack and a
 * wakeup threshold, so the verifier walks the longest configured paths.
 * Prints "OK <prog> <insns>" or "FAIL <prog>" + the log tail; exit 1 on any failure.
 * Programs in SEC("netfilter") get their type set by hand (libbpf 1.1 lacks it).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/types.h>
#include <bpf/libbpf.h>
#include <bpf/btf.h>
#include "../../bpf/src/netbee_abi.h"

#define PROG_TYPE_NETFILTER 32
#define ATTACH_NETFILTER 45

static char log_buf[1 << 22];

static void fill_stress(struct nb_config *c)
{
	int i, n = 0;

	memset(c, 0, sizeof(*c));
	c->want_stack = 1;
	c->wakeup_bytes = 65536;
	/* (term OR term) AND ... : every field kind, then NOT */
	for (i = 0; n + 3 <= NB_MAX_RULES - 1; i++) {
		struct nb_rule *a = &c->rules[n++], *b = &c->rules[n++];

		a->op = NB_OP_TERM;
		a->field = 1 + (i % 10);
		a->family = (i & 1) ? 6 : 4;
		a->lo = 1000; a->hi = 2000; a->value = 7;
		memset(a->mask, 0xff, 16);
		b->op = NB_OP_TERM;
		b->field = 1 + ((i + 5) % 10);
		b->family = (i & 1) ? 4 : 6;
		b->lo = 1; b->hi = 65535;
		c->rules[n++].op = (i & 1) ? NB_OP_AND : NB_OP_OR;
	}
	c->rules[n++].op = NB_OP_NOT;
	c->filter_len = n;
}

static int set_cfg(struct bpf_object *obj)
{
	struct bpf_map *m = bpf_object__find_map_by_name(obj, ".rodata");
	const struct btf *btf = bpf_object__btf(obj);
	const struct btf_type *sec;
	const struct btf_var_secinfo *vs;
	size_t size;
	void *data;
	int id, i;

	if (!m || !btf)
		return -1;
	data = (void *)bpf_map__initial_value(m, &size);
	id = btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC);
	if (id < 0)
		return -1;
	sec = btf__type_by_id(btf, id);
	vs = btf_var_secinfos(sec);
	for (i = 0; i < btf_vlen(sec); i++, vs++) {
		const struct btf_type *v = btf__type_by_id(btf, vs->type);

		if (!strcmp(btf__name_by_offset(btf, v->name_off), "cfg")) {
			if (vs->offset + sizeof(struct nb_config) > size)
				return -1;
			fill_stress((struct nb_config *)((char *)data + vs->offset));
			return 0;
		}
	}
	return -1;
}

int main(int argc, char **argv)
{
	struct bpf_object *obj;
	struct bpf_program *p;
	int i, first = 2, stress = 0, bad = 0;

	if (argc < 3) {
		fprintf(stderr, "usage: %s OBJ [--stress] PROG...\n", argv[0]);
		return 2;
	}
	if (!strcmp(argv[2], "--stress")) {
		stress = 1;
		first = 3;
	}
	for (i = first; i < argc; i++) {
		LIBBPF_OPTS(bpf_object_open_opts, oo, .kernel_log_buf = log_buf,
			    .kernel_log_size = sizeof(log_buf), .kernel_log_level = 1);
		int err;

		obj = bpf_object__open_file(argv[1], &oo);
		if (!obj) {
			fprintf(stderr, "open %s: %s\n", argv[1], strerror(errno));
			return 2;
		}
		if (stress && set_cfg(obj)) {
			fprintf(stderr, "cannot find cfg in .rodata\n");
			return 2;
		}
		bpf_object__for_each_program(p, obj) {
			int want = !strcmp(bpf_program__name(p), argv[i]);

			bpf_program__set_autoload(p, want);
			if (want && !strcmp(bpf_program__section_name(p), "netfilter")) {
				bpf_program__set_type(p, PROG_TYPE_NETFILTER);
				bpf_program__set_expected_attach_type(p, ATTACH_NETFILTER);
			}
		}
		log_buf[0] = 0;
		err = bpf_object__load(obj);
		p = bpf_object__find_program_by_name(obj, argv[i]);
		if (err || !p) {
			size_t n = strlen(log_buf);

			printf("FAIL %s (%d)\n%s\n", argv[i], err, n > 3000 ? log_buf + n - 3000 : log_buf);
			bad = 1;
		} else {
			printf("OK %s %zu\n", argv[i], bpf_program__insn_cnt(p));
		}
		bpf_object__close(obj);
	}
	return bad;
}
