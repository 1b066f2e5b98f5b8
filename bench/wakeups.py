"""Diagnostic: how many reader wakeups (IRQ work interrupts) the kernel side raises per event.

A ring buffer wakeup is an irq_work, counted in the IWI line of /proc/interrupts.
With batched wakeups there should be far fewer than one per event; one per event
costs microseconds each in the kernel. Paced UDP traffic, each configuration in turn.

    python3 -m bench.wakeups [--rate PPS] [--seconds S]
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from bench import configs, report, traffic
from bench.lab import Pair
from bench.traffic import OTHER_CPU


def irq_work_total() -> int:
    with open("/proc/interrupts") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] == "IWI:":
                return sum(int(x) for x in parts[1:] if x.isdigit())
    raise RuntimeError("no IWI line in /proc/interrupts")


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args(argv)
    # The benchmark's own threads (pipe readers) stay off the sender's CPU.
    os.sched_setaffinity(0, {OTHER_CPU})
    rows = []
    with Pair() as pair:
        for c in ("none", "floor", "netbee-nomatch", "netbee-all"):
            info: dict = {}
            with configs.running(c, pair, info):
                before = irq_work_total()
                res = traffic.udp_trial(pair, args.seconds, rate=args.rate)
                after = irq_work_total()
            shown = info.get("summary", {}).get("shown")
            per = f"{(after - before) / shown:.2f}" if shown else "-"
            rows.append([configs.LABELS[c], f"{res['sent']:,}", f"{shown:,}" if shown is not None else "-",
                         f"{after - before:,}", per])
    report.header("Diagnostic: reader wakeups per event", ["python3", "-m", "bench.wakeups"] +
                  (argv if argv is not None else sys.argv[1:]))
    print(report.table(["configuration", "packets", "events shown", "IRQ work interrupts", "per event"], rows))
    print("\nIRQ work interrupts are machine-wide (other users of irq_work add a few).\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
