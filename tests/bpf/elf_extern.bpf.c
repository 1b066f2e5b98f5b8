// SPDX-License-Identifier: GPL-2.0
/* Uses a .kconfig extern, which NetBee's loader refuses with a clear error. */
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
