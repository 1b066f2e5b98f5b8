#!/bin/sh
# Run every NetBee benchmark in turn and print the results as Markdown (paste into docs/performance.md).
# Needs root, this repository's netbee, bpftrace, iperf3, clang-19 and a C compiler. Never in a QEMU guest.
# Usage: bench/run_all.sh [quick]   ("quick": fewer rounds, for checking that everything runs)
set -eu
cd "$(dirname "$0")/.."
if [ "${1:-}" = quick ]; then
    S="--rounds 2"; K="--rounds 1 --seconds 1 --tcp-seconds 1"; U="--rounds 1 --events 20000"; F="--seconds 3"
else
    # start-up: two tools ~0.1 s apart whose times swing by +-20 % from run to run here; 15
    # rounds give a steadier median of their ratios than 7
    S="--rounds 15"; K="--rounds 4 --seconds 2 --tcp-seconds 1.5"; U="--rounds 3 --events 50000"; F="--seconds 6"
fi
# netbee's own kernel tests boot QEMU guests with virtme-ng; figures taken in one would mean nothing.
if grep -q virtme /proc/cmdline 2>/dev/null; then
    echo "bench: refusing to run inside a virtme-ng/QEMU guest: its figures mean nothing" >&2
    exit 2
fi
# A pip-installed netbee runs from compiled bytecode; without it (PYTHONDONTWRITEBYTECODE, a fresh
# checkout) every start would compile the sources again and the start-up figures would show that.
python3 -m compileall -q netbee >/dev/null
failed=""
run() {
    # One benchmark failing must not hide the others' results; the exit status still says so.
    if ! python3 -m "$@"; then
        failed="$failed $1"
        echo "bench: $* FAILED" >&2
    fi
}
run bench.startup $S
run bench.loader_phases --samples 7
run bench.verifier_cost --samples 5
run bench.kernel_cost $K
run bench.userspace $U
run bench.userspace_breakdown
run bench.flood $F
run bench.wakeups
run bench.wakeup_policy
run bench.memory
run bench.exit_teardown
if [ -n "$failed" ]; then
    echo "bench: failed:$failed" >&2
    exit 1
fi
