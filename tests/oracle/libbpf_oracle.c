// SPDX-License-Identifier: GPL-2.0
/* Dev-only oracle: let libbpf CO-RE-relocate one program of an object against a target BTF file
 * and write the instructions it would load.
 *
 * usage: libbpf_oracle OBJECT TARGET_BTF PROGRAM OUTPUT [ATTACH_FUNC]
 *
 * This executable defines syscall(), which libbpf.so binds to instead of libc's: BPF_PROG_LOAD of
 * the named program is captured (instructions written to OUTPUT, a fake fd returned) so that the
 * program never reaches the verifier; every other call (feature probes, maps, BTF) goes to the
 * kernel.  ATTACH_FUNC replaces the attach target of fentry/fexit/tp_btf programs whose target
 * this machine's kernel lacks (libbpf resolves it in the running kernel's BTF even with a custom
 * target BTF; it does not change the instructions).  Exit 0 on success; libbpf's log goes to
 * stderr. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/bpf.h>
#include <bpf/libbpf.h>
#include <dlfcn.h>

static const char *want_name;
static const char *out_path;
static int captured;
static long (*real_syscall)(long, ...);

long syscall(long nr, ...)
{
	va_list ap;
	long a[6];
	int i;

	va_start(ap, nr);
	for (i = 0; i < 6; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);

	if (nr == __NR_bpf && a[0] == BPF_PROG_LOAD) {
		const union bpf_attr *attr = (const union bpf_attr *)a[1];

		if (want_name && strncmp(attr->prog_name, want_name, BPF_OBJ_NAME_LEN - 1) == 0) {
			FILE *f = fopen(out_path, "wb");

			if (!f || fwrite((const void *)(unsigned long)attr->insns, 8, attr->insn_cnt, f) != attr->insn_cnt) {
				perror(out_path);
				exit(3);
			}
			fclose(f);
			captured++;
			return open("/dev/null", O_RDONLY | O_CLOEXEC);
		}
	}
	if (nr == __NR_bpf && a[0] == BPF_PROG_BIND_MAP && captured)
		return 0; /* the fake program fd cannot be bound; libbpf only warns, keep the log clean */
	if (!real_syscall)
		real_syscall = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
	return real_syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

static int print_fn(enum libbpf_print_level level, const char *fmt, va_list args)
{
	if (level == LIBBPF_DEBUG && !getenv("NB_ORACLE_DEBUG"))
		return 0;
	return vfprintf(stderr, fmt, args);
}

int main(int argc, char **argv)
{
	LIBBPF_OPTS(bpf_object_open_opts, opts);
	struct bpf_object *obj;
	struct bpf_program *prog;
	int found = 0, err;

	if (argc != 5 && argc != 6) {
		fprintf(stderr, "usage: %s OBJECT TARGET_BTF PROGRAM OUTPUT [ATTACH_FUNC]\n", argv[0]);
		return 2;
	}
	libbpf_set_print(print_fn);
	opts.btf_custom_path = argv[2];
	obj = bpf_object__open_file(argv[1], &opts);
	if (!obj) {
		fprintf(stderr, "open %s failed: %d\n", argv[1], -errno);
		return 1;
	}
	/* only the wanted program is relocated: libbpf shares its candidate cache across
	 * the programs of one load, so one program per load is what relocate() computes */
	bpf_object__for_each_program(prog, obj) {
		int me = strcmp(bpf_program__name(prog), argv[3]) == 0;

		found |= me;
		bpf_program__set_autoload(prog, me);
		/* libbpf 1.1 predates SEC("netfilter"); the type does not affect CO-RE and the
		 * load never reaches the kernel, so give it the kernel's number (32) */
		if (bpf_program__type(prog) == BPF_PROG_TYPE_UNSPEC)
			bpf_program__set_type(prog, 32);
		if (me && argc == 6 && bpf_program__set_attach_target(prog, 0, argv[5])) {
			fprintf(stderr, "cannot set attach target %s\n", argv[5]);
			return 1;
		}
	}
	if (!found) {
		fprintf(stderr, "no program %s in %s\n", argv[3], argv[1]);
		return 1;
	}
	want_name = argv[3];
	out_path = argv[4];
	err = bpf_object__load(obj);
	bpf_object__close(obj);
	if (err) {
		fprintf(stderr, "load failed: %d\n", err);
		return 1;
	}
	if (captured != 1) {
		fprintf(stderr, "captured %d loads of %s\n", captured, argv[3]);
		return 1;
	}
	return 0;
}
