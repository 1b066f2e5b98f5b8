// SPDX-License-Identifier: GPL-2.0
/* Uses a .kconfig extern, and calls an undefined function: NetBee's loader refuses both with a clear error. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

extern unsigned int LINUX_KERNEL_VERSION __kconfig;

SEC("raw_tp/x")
int uses_kconfig(void *ctx)
{
	return LINUX_KERNEL_VERSION > 0x60000;
}

/* A function defined nowhere and not a kernel function (no __ksym): refused too. */
extern int nb_defined_nowhere(void *ctx);

SEC("raw_tp/y")
int calls_undefined(void *ctx)
{
	return nb_defined_nowhere(ctx);
}
