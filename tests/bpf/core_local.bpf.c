// SPDX-License-Identifier: GPL-2.0
/* CO-RE test object: local types of our own, relocated against hand-built "other kernel" BTFs
 * (tests/unit/test_core_local.py) and against real kernels (where they are all missing). */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define __pai __attribute__((preserve_access_index))

struct nb_inner {
	int x;
	int y;
	char tag[4];
} __pai;

struct nb_sample {
	int a;
	union {
		long l;
		struct {
			short s1;
			short s2;
		};
	};
	struct nb_inner in[5];
	unsigned int ubf1 : 3, ubf2 : 7, ubf3 : 30; /* ubf3 crosses a 32-bit boundary */
	int sbf1 : 5, sbf2 : 13;
	long long big;
	unsigned char flags;
	unsigned int ucount;
	int missing;
	struct nb_inner *ptr;
	int grid[3][4];
	int flex_n;
	int flex[];
} __pai;

/* a flavor: same essential name "nb_sample" */
struct nb_sample___v1 {
	int a;
	long renamed;
} __pai;

union nb_union {
	int i;
	unsigned long long u;
} __pai;

typedef struct {
	int p;
	int q;
} nb_pair_t;

enum nb_color { NB_RED = 1, NB_GREEN = 2, NB_BLUE = 4, NB_ABSENT = 7 };
enum nb_big { NB_BIG_A = 0x100000000ULL, NB_BIG_B = 3 };
enum nb_neg { NB_NEG = -5, NB_NEG_ZERO = 0 };

struct nb_nowhere {
	int z;
} __pai;

struct nb_ctx {
	struct nb_sample *s;
	struct nb_sample___v1 *v1;
	nb_pair_t *pair;
	union nb_union *u;
} __pai;

/* offsets as ALU adds and direct loads (LDX off) */
SEC("raw_tp/nb_core_offsets")
long core_offsets(struct nb_ctx *ctx)
{
	struct nb_sample *s = ctx->s;
	long sum = 0;

	sum += s->a;                /* LDX off relocation */
	sum += s->in[3].y;          /* nested access string a.in[3].y */
	sum += s->s2;               /* through anonymous union and struct */
	sum += s->big;
	sum += s->flags;            /* unsigned 1-byte load */
	sum += s->ucount;           /* unsigned 4-byte load */
	sum += s->grid[2][1];
	sum += s->in[1].tag[2];
	sum += s->ptr->x;
	sum += s->flex[2];
	sum += ctx->pair->q;
	sum += ctx->u->u;
	return sum;
}

SEC("raw_tp/nb_core_probe")
long core_probe(struct nb_ctx *ctx)
{
	struct nb_sample *s = ctx->s;
	int y = 0, q = 0;

	bpf_core_read(&y, sizeof(y), &s->in[4].y); /* ALU add relocation */
	q = BPF_CORE_READ(ctx, pair, q);
	return y + q;
}

SEC("raw_tp/nb_core_fieldinfo")
long core_fieldinfo(struct nb_ctx *ctx)
{
	struct nb_sample *s = ctx->s;
	long r = 0;

	r += bpf_core_field_exists(s->a);
	r += bpf_core_field_exists(s->missing) << 1;
	r += bpf_core_field_size(s->l) << 2;
	r += bpf_core_field_size(s->in) << 3;
	r += bpf_core_field_size(s->in[2].tag) << 4;
	r += bpf_core_field_offset(s->in[2].tag) << 5;
	r += bpf_core_field_offset(s->grid[1][3]) << 6;
	r += __builtin_preserve_field_info(s->a, BPF_FIELD_SIGNED) << 7;
	r += __builtin_preserve_field_info(s->ucount, BPF_FIELD_SIGNED) << 8;
	return r;
}

SEC("raw_tp/nb_core_bitfields")
long core_bitfields(struct nb_ctx *ctx)
{
	struct nb_sample *s = ctx->s;
	long r = 0;

	r += BPF_CORE_READ_BITFIELD_PROBED(s, ubf1);
	r += BPF_CORE_READ_BITFIELD_PROBED(s, ubf2);
	r += BPF_CORE_READ_BITFIELD_PROBED(s, ubf3);
	r += BPF_CORE_READ_BITFIELD_PROBED(s, sbf1);
	r += BPF_CORE_READ_BITFIELD(s, sbf2);
	return r;
}

SEC("raw_tp/nb_core_types")
long core_types(void *ctx)
{
	long r = 0;

	r += bpf_core_type_exists(struct nb_sample);
	r += bpf_core_type_exists(struct nb_nowhere) << 1;
	r += bpf_core_type_size(struct nb_sample) << 2;
	r += bpf_core_type_size(union nb_union) << 3;
	r += bpf_core_type_size(nb_pair_t) << 4;
	r += bpf_core_type_id_local(struct nb_sample) << 5;
	r += bpf_core_type_id_kernel(struct nb_inner) << 6;
	r += bpf_core_type_matches(struct nb_inner) << 7;
	r += bpf_core_type_matches(enum nb_color) << 8;
	r += bpf_core_type_matches(nb_pair_t) << 9;
	r += bpf_core_type_exists(enum nb_big) << 10;
	return r;
}

SEC("raw_tp/nb_core_enums")
long core_enums(void *ctx)
{
	long r = 0;

	r += bpf_core_enum_value_exists(enum nb_color, NB_GREEN);
	r += bpf_core_enum_value_exists(enum nb_color, NB_ABSENT) << 1;
	r += bpf_core_enum_value(enum nb_color, NB_BLUE) << 2;
	r += bpf_core_enum_value(enum nb_big, NB_BIG_A) << 3;
	r += bpf_core_enum_value(enum nb_neg, NB_NEG) << 4;
	if (bpf_core_enum_value_exists(enum nb_color, NB_ABSENT))
		r += bpf_core_enum_value(enum nb_color, NB_ABSENT); /* poisoned when missing */
	return r;
}

SEC("raw_tp/nb_core_missing")
long core_missing(struct nb_ctx *ctx)
{
	struct nb_sample *s = ctx->s;
	long r = 0;

	if (bpf_core_field_exists(s->missing))
		r = s->missing; /* poisoned when the field is missing */
	if (bpf_core_field_exists(ctx->v1->renamed))
		r += ctx->v1->renamed;
	return r;
}

char LICENSE[] SEC("license") = "GPL";
