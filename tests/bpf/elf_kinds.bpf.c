// SPDX-License-Identifier: GPL-2.0
/*
 * BTF coverage object: makes clang emit every BTF kind (INT through ENUM64,
 * DECL_TAG, TYPE_TAG, FLOAT, FWD, RESTRICT, bitfields, signed enums). Its .BTF
 * is also committed as tests/data/kinds.btf for tests that want a raw blob.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

#define __tag(x) __attribute__((btf_decl_tag(x)))
#define __ttag(x) __attribute__((btf_type_tag(x)))

enum small { SMALL_A = 1, SMALL_B = 2 };
enum negative { NEG_A = -5, NEG_B = 3 };
enum big { BIG_A = 1, BIG_B = 0x123456789ULL };
enum big_neg { BIGN_A = -0x123456789LL, BIGN_B = 1 };

struct opaque;          /* FWD */
union opaque_u;         /* FWD, union */

struct bits {
	unsigned int a : 3;
	int b : 5;
	unsigned int c : 24;
	unsigned long long d : 40;
	__u8 e;
} __tag("struct_tag");

union u {
	__u32 x;
	float f;
	double d;
};

typedef struct bits bits_t;

struct holder {
	bits_t b __tag("member_tag");
	union u uu;
	volatile __u32 vol;
	const __u16 con;
	int __ttag("user") *tagged;
	char *restrict rp;
	struct opaque *op;
	union opaque_u *opu;
	enum small s;
	enum negative n;
	enum big g;
	enum big_neg bn;
	__u64 arr[3][2];
	long double ld;
};

struct holder holder_var SEC(".data.holder");

static __noinline int tagged_fn(int x __tag("param_tag"), struct holder *h) __tag("func_tag")
{
	return x + h->s;
}

SEC("raw_tp/kinds")
int kinds(void *ctx)
{
	return tagged_fn(1, &holder_var);
}
