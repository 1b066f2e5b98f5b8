#!/usr/bin/env python3
"""Generate man/netbee.1 from netbee.cli.build_parser() with argparse-manpage.

Deterministic: fixed width and date, so tests/unit/test_manpage.py can regenerate and compare.
Run: python3 scripts/gen_manpage.py [--output man/netbee.1]  (--output - for stdout)
"""
from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATE = "2026-11-25"


def render() -> str:
    os.environ["COLUMNS"] = "80"  # argparse wraps help text to the terminal width
    sys.path.insert(0, ROOT)
    from argparse_manpage.manpage import Manpage

    from netbee import __version__
    from netbee.cli import build_parser

    data = {"prog": "netbee", "version": __version__, "project_name": "netbee",
            "manual_title": "NetBee Manual", "date": DATE,
            "description": "live packet-path troubleshooting for Linux with eBPF",
            "include": os.path.join(ROOT, "man", "netbee.include")}
    return str(Manpage(build_parser(), _data=data))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", default=os.path.join(ROOT, "man", "netbee.1"))
    args = ap.parse_args(argv)
    text = render()
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
