"""Experiment: what the ring buffer wakeup policy costs per event in the kernel.

The tracer runs in this process (netbee.tracer, tracepoint backend, both
benchmark namespaces, no filter) with a reader thread on CPU 1 draining
Tracer.events(); paced UDP traffic from CPU 0. For each wakeup_bytes setting
the kernel's BPF run time per event (BPF_ENABLE_STATS) and the IRQ work
interrupts per event are measured:

- netbee's default (64 KiB: FORCE_WAKEUP whenever at least that much is queued,
  NO_WAKEUP below);
- 1 GiB, larger than the ring buffer, so never a forced wakeup: the reader
  then relies on its 0.1 s poll timeout (the lower bound of what batching can give).

    python3 -m bench.wakeup_policy [--rate PPS] [--seconds S]
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
from typing import List, Optional

from bench import bpfstats, report, traffic
from bench.lab import Pair
from bench.traffic import OTHER_CPU
from bench.wakeups import irq_work_total


def measure(pair: Pair, wakeup_bytes: int, rate: float, seconds: float) -> dict:
    from netbee.tracer import TraceOptions, Tracer

    tracer = Tracer(TraceOptions(backend="tracepoint", netns=[pair.tx, pair.rx], wakeup_bytes=wakeup_bytes))
    stop = threading.Event()
    got = [0]

    def reader() -> None:
        os.sched_setaffinity(0, {OTHER_CPU})
        while not stop.is_set():
            for _ in tracer.events(timeout=0.1):
                got[0] += 1

    with tracer:
        tracer.start()
        th = threading.Thread(target=reader, daemon=True)
        th.start()
        with bpfstats.StatsOn():
            c0 = tracer.counters()
            b = bpfstats.snapshot(os.getpid())
            i0 = irq_work_total()
            res = traffic.udp_trial(pair, seconds, rate=rate)
            i1 = irq_work_total()
            a = bpfstats.snapshot(os.getpid())
            c1 = tracer.counters()
        stop.set()
        th.join(timeout=5)
    events = (c1.submitted - c0.submitted) + (c1.lost - c0.lost)
    run_ns = sum(s.run_time_ns for s in bpfstats.delta(b, a).values())
    return {"wakeup_bytes": wakeup_bytes, "packets": res["sent"], "events": events,
            "lost": c1.lost - c0.lost, "ns_per_event": run_ns / max(events, 1),
            "iwi_per_event": (i1 - i0) / max(events, 1)}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    rows: List[dict] = []
    with Pair() as pair:
        for _ in range(args.rounds):
            for wb in (64 << 10, 1 << 30):
                rows.append(measure(pair, wb, args.rate, args.seconds))
    report.header("Experiment: ring buffer wakeup policy", ["python3", "-m", "bench.wakeup_policy"] +
                  (argv if argv is not None else sys.argv[1:]))
    out = []
    for wb in (64 << 10, 1 << 30):
        rs = [r for r in rows if r["wakeup_bytes"] == wb]
        out.append([f"{wb:,}", f"{sum(r['events'] for r in rs):,}", f"{sum(r['lost'] for r in rs):,}",
                    f"{report.median(r['ns_per_event'] for r in rs):.0f}",
                    f"{report.median(r['iwi_per_event'] for r in rs):.2f}"])
    print(report.table(["wakeup_bytes", "events", "lost", "kernel ns per event (median, all programs)",
                        "IRQ work interrupts per event"], out))
    print(f"\n{args.rounds} rounds of {args.seconds} s at {args.rate:.0f} packets/s offered, alternating.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
