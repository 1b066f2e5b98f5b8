#!/usr/bin/env python3
"""Build netbee/resolvers/oui.db from Debian's ieee-data CSV files (MA-L, MA-M, MA-S/IAB).

Format (read by netbee/resolvers/oui.py): zlib-compressed UTF-8 text, one line per assignment,
"<hex prefix>\t<organization>", sorted; the prefix length (24, 28 or 36 bits) is its hex length
times four. Run: python3 scripts/gen_oui.py [--src /usr/share/ieee-data] [--out netbee/resolvers/oui.db]
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import zlib

SOURCES = (("oui.csv", 6), ("mam.csv", 7), ("oui36.csv", 9), ("iab.csv", 9))


def read_registry(path: str, digits: int) -> dict:
    out = {}
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for row in csv.reader(f):
            if len(row) < 3 or row[0] == "Registry":
                continue
            prefix = row[1].strip().upper()
            if len(prefix) != digits or not re.fullmatch(r"[0-9A-F]+", prefix):
                continue
            # Control characters would reach the terminal through the table renderer.
            name = re.sub(r"[\x00-\x1f\x7f\t]+", " ", " ".join(row[2].split())).strip()
            if name:
                out[prefix] = name
    return out


def build(src: str) -> bytes:
    entries = {}
    for name, digits in SOURCES:
        path = os.path.join(src, name)
        if os.path.exists(path):
            entries.update(read_registry(path, digits))
    if not entries:
        raise SystemExit(f"gen_oui: no registry CSV files under {src}")
    text = "".join(f"{p}\t{n}\n" for p, n in sorted(entries.items()))
    return zlib.compress(text.encode("utf-8"), 9)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default="/usr/share/ieee-data")
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "netbee", "resolvers", "oui.db"))
    args = ap.parse_args(argv)
    data = build(args.src)
    with open(args.out, "wb") as f:
        f.write(data)
    print(f"gen_oui: wrote {len(data)} bytes to {os.path.normpath(args.out)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
