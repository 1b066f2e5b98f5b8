#!/bin/sh
# Runs inside a QEMU guest started by tests/vm/run.py: $1 = results dir (shared rw with the host),
# $2 = the host's python binary (not a pyenv shim: a shim costs seconds in the emulated guest),
# $3 = source tree, $4 = kernel series (6.1, 6.12), remaining args = extra pytest arguments.
set -u
results=$1 python=$2 tree=$3 series=$4
shift 4
cd "$tree" || exit 90
# Module autoloading works in the guest too, but loading up front keeps the first test's timing sane.
for m in veth nf_tables nft_chain_nat nft_reject_inet nft_ct nf_conntrack iptable_filter ip6table_filter \
         x_tables nfnetlink; do
    modprobe -q "$m" 2>/dev/null
done
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
mkdir -p /run/netns
cp /sys/kernel/btf/vmlinux "$results/vmlinux.btf" 2>/dev/null
uname -r > "$results/uname"
export NETBEE_IN_VM=1 NETBEE_VM_SERIES="$series" PYTHONDONTWRITEBYTECODE=1 NETBEE_RESULTS_JSON="$results/results.json"
"$python" -m pytest -p no:cacheprovider -m requires_kernel --junitxml="$results/junit.xml" \
    -o console_output_style=classic -rA "$@" tests/kernel > "$results/pytest.log" 2>&1
echo $? > "$results/exitstatus"
