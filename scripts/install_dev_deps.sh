#!/bin/sh
# Install what NetBee's tests need on Debian 12 (as root): apt packages, then a venv (default .venv)
# with netbee in editable mode and the test tools. Prints the venv's bin directory on the last line.
set -eu
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# kmod/udev/busybox-static: virtme-ng builds the guest's initramfs and device links with them;
# zstd: Debian 6.12's vmlinuz payload is zstd-compressed (tests/vm/bzimage.py).
apt-get install -y -q --no-install-recommends \
    clang-19 llvm-19 libbpf-dev bpftool nftables iptables tcpdump iproute2 iputils-ping iperf3 \
    qemu-system-x86 kmod udev busybox-static zstd ieee-data socat netcat-openbsd procps \
    python3 python3-venv python3-pip ca-certificates >&2

venv=${NETBEE_VENV:-.venv}
[ -x "$venv/bin/python3" ] || python3 -m venv "$venv" >&2
"$venv/bin/python3" -m pip install -q --upgrade pip >&2
"$venv/bin/python3" -m pip install -q -e . pytest hypothesis virtme-ng argparse-manpage vermin >&2
cd "$venv/bin" && pwd
