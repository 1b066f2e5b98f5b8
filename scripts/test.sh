#!/bin/sh
# Run every NetBee test on a fresh Debian 12 machine (as root): install what the tests need
# (apt packages, a venv with the test tools), then unit tests, kernel tests on this kernel, and
# the Debian 6.1/6.12 kernels under QEMU. Exit status: non-zero on any failure.
set -eu
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "scripts/test.sh: must run as root (kernel tests load BPF programs and create namespaces)" >&2
    exit 1
fi

bindir=$(sh scripts/install_dev_deps.sh | tail -n 1)
PATH="$bindir:$PATH"
export PATH

python3 -m pytest tests
