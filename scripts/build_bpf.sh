#!/bin/bash
# Build NetBee's BPF objects reproducibly.
#
#   scripts/build_bpf.sh            bpf/src/*.bpf.c -> bpf/prebuilt/*.bpf.o, tests/bpf/*.bpf.c -> tests/bpf/*.bpf.o
#   scripts/build_bpf.sh --check    rebuild into a temporary directory and compare with the
#                                   committed objects; exit 1 and name every object that differs
#   either form with SOURCE...      only those *.bpf.c files (paths relative to the repository)
#
# Reproducible: the same source gives byte-identical objects on any machine
# and in any checkout path. Compiler and libbpf headers are pinned Debian
# packages (installed when missing); clang runs in the repository root on
# relative paths with the compilation directory recorded as ".", so no
# absolute path enters the object, and clang can still reopen each source to
# put its line text into .BTF.ext (prefix maps would break that); inputs are processed in sorted order; nothing
# records a time. The .BTF/.BTF.ext sections stay (the loader needs them):
# no stripping.
# A bash script: `sh scripts/build_bpf.sh` (dash) hands itself to bash.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail
export LC_ALL=C
export SOURCE_DATE_EPOCH=0
umask 022

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
CLANG=clang-19
# linux/types.h and linux/bpf.h (used by test objects) come from Debian's
# linux-libc-dev; their asm/ directory sits in the multiarch include path,
# which a -target bpf compile does not search by itself.
CFLAGS=(-g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_x86 -Wall
	-fno-ident
	-idirafter /usr/include/x86_64-linux-gnu
	-fdebug-compilation-dir=.
	-I bpf/src)

need_tools() {
	local missing=()
	command -v "$CLANG" >/dev/null || missing+=(clang-19)
	command -v llvm-strip-19 >/dev/null || missing+=(llvm-19)
	[ -f /usr/include/bpf/bpf_helpers.h ] || missing+=(libbpf-dev)
	[ -f /usr/include/linux/bpf.h ] || missing+=(linux-libc-dev)
	if [ ${#missing[@]} -gt 0 ]; then
		echo "build_bpf: installing ${missing[*]}" >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
	fi
}

# compile SRC OUT: relative paths only, from the repository root, so that
# nothing depends on where the checkout lives.
compile() {
	local src=$1 out=$2 tmp
	tmp="$out.tmp.$$"
	(cd "$ROOT" && "$CLANG" "${CFLAGS[@]}" -c "$src" -o "$tmp")
	mv -f "$tmp" "$out"
}

# build_all DEST_ROOT LIST: write every object under DEST_ROOT with the
# repository's relative layout; append each object's relative path to LIST.
build_all() {
	local dest=$1 list=$2 src rel out
	local -a srcs
	if [ ${#ONLY[@]} -gt 0 ]; then
		mapfile -t srcs < <(printf "$ROOT/%s\n" "${ONLY[@]}" | sort)
	else
		mapfile -t srcs < <(find "$ROOT/bpf/src" "$ROOT/tests/bpf" -maxdepth 1 -name '*.bpf.c' 2>/dev/null | sort)
	fi
	for src in "${srcs[@]}"; do
		rel=${src#"$ROOT/"}
		case $rel in
		bpf/src/*) out="$dest/bpf/prebuilt/$(basename "${rel%.c}").o" ;;
		*) out="$dest/${rel%.c}.o" ;;
		esac
		mkdir -p "$(dirname "$out")"
		compile "$rel" "$out"
		echo "${out#"$dest/"}" >>"$list"
	done
}

need_tools

MODE=build
if [ "${1:-}" = "--check" ]; then
	MODE=check
	shift
fi
ONLY=()
for a in "$@"; do
	case $a in
	-*) echo "usage: $0 [--check] [SOURCE.bpf.c...]" >&2; exit 2 ;;
	*.bpf.c) [ -f "$ROOT/$a" ] || { echo "build_bpf: no such source: $a" >&2; exit 2; }; ONLY+=("$a") ;;
	*) echo "build_bpf: not a *.bpf.c source: $a" >&2; exit 2 ;;
	esac
done

if [ $MODE = check ]; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	build_all "$tmp/out" "$tmp/list"
	bad=0
	while IFS= read -r rel; do
		if ! cmp -s "$tmp/out/$rel" "$ROOT/$rel"; then
			echo "build_bpf: $rel differs from its source (rebuild with scripts/build_bpf.sh and commit)" >&2
			bad=1
		fi
	done <"$tmp/list"
	exit $bad
fi

list=$(mktemp)
trap 'rm -f "$list"' EXIT
build_all "$ROOT" "$list"
