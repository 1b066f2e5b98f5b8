#!/bin/sh
# Build dist/netbee.pyz: one executable zipapp with netbee, its prebuilt BPF objects and data,
# pyelftools and construct. Runs as ./netbee.pyz or python3 netbee.pyz with nothing but python3.
set -eu
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
out=${1:-dist/netbee.pyz}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT INT TERM

# -L: netbee/bpf is a symlink to bpf/prebuilt; the archive needs the files themselves.
cp -rL netbee "$stage/netbee"
for mod in elftools construct; do
    src=$("$python" -c "import os, $mod; print(os.path.dirname($mod.__file__))")
    cp -r "$src" "$stage/$mod"
done
find "$stage" -name __pycache__ -prune -exec rm -rf {} +
test -f "$stage/netbee/bpf/netbee.bpf.o" || { echo "build_pyz: netbee/bpf/netbee.bpf.o missing" >&2; exit 1; }

mkdir -p "$(dirname "$out")"
# Our own __main__: keeps main()'s exit status (zipapp -m would drop it) and runs netbee from a
# private extracted copy so modules that open data files by path work (see scripts/pyz_main.py).
cp scripts/pyz_main.py "$stage/__main__.py"
"$python" -m zipapp "$stage" -o "$out" -p "/usr/bin/env python3" -c
chmod +x "$out"
echo "$out: $(wc -c < "$out") bytes"
