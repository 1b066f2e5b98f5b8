// SPDX-License-Identifier: GPL-2.0
/*
 * elf_basic without map pinning, for the libbpf link oracle (libbpf would try to
 * pin `flows` in a BPF file system). Same programs, maps and subprograms.
 */
#define ELF_NO_PIN
#include "elf_basic.bpf.c"
