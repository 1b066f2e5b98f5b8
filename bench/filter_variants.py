"""Diagnostic: the kernel cost of netbee's filter variants, side by side in one session.

The floor, netbee from another checkout ("before", e.g. an export of the base commit), and this
tree's netbee with the generated filter and with the C interpreter (TraceOptions.
filter_interpreter) or the dynamic filter (filter_dynamic), alternating within every round (the starting one rotates), all with the
kernel's BPF run-time statistics on. The figure is the kernel's own: BPF run time per UDP packet
received, summed over the tracer's programs; packet rates on this machine move too much to
separate variants a few percent apart.

    python3 -m bench.filter_variants --before DIR [--rounds N] [--seconds S] [--expr EXPR]
                                     [--rate PPS] [--variants floor,before,generated,interpreter,dynamic]
                                     [--tree NAME=DIR ...]

--tree adds the netbee of another checkout as variant NAME (repeatable; e.g. builds of the BPF
object with one change each, compared in the same rounds).

--rate paces the sender (packets per second; 0: as fast as it can). With no filter, an unpaced
sender fills the ring buffer and most events are lost; a rate the reader keeps up with measures
events that reach userspace.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from typing import Dict, List

from bench import bpfstats, configs, report, traffic, tracers
from bench.floor import Floor
from bench.lab import Pair
from bench.traffic import OTHER_CPU

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# `python -c` program: the netbee command with TraceOptions.OPTION=True (the C interpreter
# instead of generated code, or the dynamic filter)
VARIANT_MAIN = """
import sys
import netbee.tracer as tracer
init = tracer.Tracer.__init__
def with_option(self, opts=None, **kw):
    init(self, (opts or tracer.TraceOptions()).replace(OPTION=True), **kw)
tracer.Tracer.__init__ = with_option
from netbee.cli import main
sys.exit(main())
"""


def netbee_in(tree: str, python_args: List[str], args: List[str]) -> List[str]:
    # `python -m`/`-c` put the working directory first on sys.path: the tree's netbee runs
    return configs.pin(["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", tree, sys.executable]
                       + python_args + args)


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", metavar="DIR", help="checkout whose netbee is 'before'")
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=DIR",
                    help="another checkout's netbee as variant NAME (repeatable)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=2.0, help="UDP trial length")
    ap.add_argument("--expr", default=configs.NOMATCH_EXPR, help="netbee's filter (default: matches nothing)")
    ap.add_argument("--rate", type=float, default=0, help="UDP packets per second (0: unpaced)")
    ap.add_argument("--variants", default="floor,before,generated,interpreter",
                    help="comma-separated subset of floor,before,generated,interpreter,dynamic "
                         "(floor always runs)")
    args = ap.parse_args(argv)
    os.sched_setaffinity(0, {OTHER_CPU})
    extra = {}
    for spec in args.tree:
        name, sep, tree = spec.partition("=")
        if not sep or not name or not os.path.isdir(tree):
            ap.error(f"--tree {spec!r}: want NAME=DIR with an existing DIR")
        extra[name] = (os.path.abspath(tree), ["-m", "netbee"])
    chosen = [c for c in args.variants.split(",") if c] + list(extra)
    if "before" in chosen and not args.before:
        ap.error("variant 'before' needs --before DIR")
    variants = {
        "before": (os.path.abspath(args.before or "."), ["-m", "netbee"]),
        "generated": (HERE, ["-m", "netbee"]),
        "interpreter": (HERE, ["-c", VARIANT_MAIN.replace("OPTION", "filter_interpreter")]),
        "dynamic": (HERE, ["-c", VARIANT_MAIN.replace("OPTION", "filter_dynamic")]),
        **extra,
    }
    unknown = set(chosen) - set(variants) - {"floor"}
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}")
    variants = {k: v for k, v in variants.items() if k in chosen}
    names = ["floor"] + list(variants)
    per_packet: Dict[str, List[float]] = {c: [] for c in names}
    per_run: Dict[str, Dict[str, List[float]]] = {c: {} for c in names}
    lost_share: Dict[str, List[float]] = {c: [] for c in names}  # of the events the filter kept
    with Pair() as pair, bpfstats.StatsOn():
        traffic.udp_trial(pair, 0.5)  # warm caches, neighbour entries, page pools
        for r in range(args.rounds):
            for c in names[r % len(names):] + names[:r % len(names)]:
                if c == "floor":
                    with Floor([pair.tx, pair.rx]):
                        before = bpfstats.snapshot(os.getpid())
                        res = traffic.udp_trial(pair, args.seconds, rate=args.rate)
                        after = bpfstats.snapshot(os.getpid())
                else:
                    tree, py = variants[c]
                    nb_args = ["--backend", "tracepoint", "--netns", pair.tx, "--netns", pair.rx, "--json",
                               args.expr]
                    with tracers.Tracer(netbee_in(tree, py, nb_args), stdout_to_null=True) as t:
                        t.wait_ready(need="tracing")
                        before = bpfstats.snapshot(t.pid)
                        res = traffic.udp_trial(pair, args.seconds, rate=args.rate)
                        after = bpfstats.snapshot(t.pid)
                        t.interrupt()
                    got = configs.parse_summary(t.stderr_lines)
                    if "shown" in got and "lost" in got:
                        lost_share[c].append(got["lost"] / max(got["shown"] + got["lost"], 1))
                delta = bpfstats.delta(before, after)
                per_packet[c].append(sum(s.run_time_ns for s in delta.values()) / max(res["received"], 1))
                for s in delta.values():
                    if s.run_cnt:
                        per_run[c].setdefault(s.name, []).append(s.run_time_ns / s.run_cnt)

    report.header("Diagnostic: filter variants, BPF run time per packet",
                  ["python3", "-m", "bench.filter_variants"] + (argv if argv is not None else sys.argv[1:]))
    rows = []
    for c in names:
        ratios = [v / f for v, f in zip(per_packet[c], per_packet["floor"])]
        lost = f"{100 * statistics.median(lost_share[c]):.1f} %" if lost_share[c] else "-"
        rows.append([c, f"{statistics.median(per_packet[c]):.0f}", report.spread(per_packet[c]),
                     f"{statistics.median(ratios):.2f}", lost])
    print(report.table(["variant", "BPF ns per packet (median)", "min..max", "/ floor (median of rounds)",
                        "events lost (median)"], rows))
    progs = sorted({p for c in variants for p, v in per_run[c].items() if len(v) * 2 >= args.rounds})
    print()
    print(report.table(["program"] + list(variants),
                       [[p] + [f"{statistics.median(per_run[c][p]):.0f}" if p in per_run[c] else "-"
                               for c in variants] for p in progs]))
    print(f"\nns per run, medians over {args.rounds} rounds of {args.seconds} s; filter {args.expr!r}; "
          f"sender rate {args.rate or 'unpaced'}"
          + (f"; 'before' = netbee from {os.path.abspath(args.before)}" if "before" in variants else "")
          + "".join(f"; {n!r} = netbee from {t}" for n, (t, _) in extra.items()) + ".")
    return 0


if __name__ == "__main__":
    sys.exit(main())
