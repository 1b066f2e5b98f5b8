"""Benchmark 3: per-packet cost in the kernel.

Small UDP packets (18-byte payload, 60-byte frames) from namespace tx to rx
with udpblast, and iperf3 TCP, under each configuration of bench/configs.py.
Configurations alternate within every round (the starting one rotates), and
the medians over rounds are compared as a percentage of the untraced rate.
Then --stats-rounds more rounds (configurations again alternating, the start
rotating) turn on the kernel's BPF run-time statistics (BPF_ENABLE_STATS) and
read run_time_ns/run_cnt of each tracer's programs; their rates are not used,
as the statistics themselves add two clock reads per run. Ratios to the floor
are taken within each round and their median reported: one trial alone swings
by a third on a noisy machine, the floor's tiny programs much less than ours.

    python3 -m bench.kernel_cost [--rounds N] [--seconds S] [--tcp-seconds S] [--stats-rounds N]
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List

from bench import bpfstats, configs, kcounters, report, traffic
from bench.lab import Pair
from bench.traffic import OTHER_CPU

TARGET_NOMATCH_OVER_FLOOR = 1.5
TARGET_EVENT_NS = 400.0


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0, help="UDP trial length")
    ap.add_argument("--tcp-seconds", type=float, default=2.0, help="iperf3 trial length (0: no TCP)")
    ap.add_argument("--stats-rounds", type=int, default=3, help="rounds with BPF run-time statistics")
    ap.add_argument("--configs", default=",".join(configs.CONFIGS))
    args = ap.parse_args(argv)
    # The benchmark's own threads (pipe readers) stay off the sender's CPU.
    os.sched_setaffinity(0, {OTHER_CPU})
    names = args.configs.split(",")
    unknown = set(names) - set(configs.CONFIGS)
    if unknown:
        ap.error(f"unknown configs {sorted(unknown)}")

    pps: Dict[str, List[float]] = {c: [] for c in names}
    cpu: Dict[str, List[float]] = {c: [] for c in names}
    gbps: Dict[str, List[float]] = {c: [] for c in names}
    infos: Dict[str, List[dict]] = {c: [] for c in names}
    stats: Dict[str, List[dict]] = {c: [] for c in names if c != "none"}
    with Pair() as pair:
        traffic.udp_trial(pair, 0.5)  # warm caches, neighbour entries, page pools
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for c in order:
                info: dict = {}
                with configs.running(c, pair, info):
                    res = traffic.udp_trial(pair, args.seconds)
                    if args.tcp_seconds > 0:
                        gbps[c].append(traffic.iperf3_trial(pair, args.tcp_seconds))
                pps[c].append(res["recv_pps"])
                cpu[c].append(res["cpu_ns_per_packet"])
                info["udp"] = res
                infos[c].append(info)
        with bpfstats.StatsOn():
            traced = [c for c in names if c != "none"]
            for r in range(args.stats_rounds):
                for c in traced[r % len(traced):] + traced[:r % len(traced)]:
                    stats[c].append(_stats_trial(c, pair, args.seconds))

    report.header("3. Per-packet cost in the kernel",
                  ["python3", "-m", "bench.kernel_cost"] + (argv if argv is not None else sys.argv[1:]))
    base = report.median(pps["none"]) if "none" in pps else None
    base_tcp = report.median(gbps["none"]) if "none" in gbps and gbps["none"] else None
    base_cpu = report.median(cpu["none"]) if "none" in cpu else None
    rows = []
    for c in names:
        m = report.median(pps[c])
        pct = f"{100 * m / base:.1f} %" if base else "-"
        mc = report.median(cpu[c])
        added = f"{mc - base_cpu:+.0f}" if base_cpu else "-"
        tcp = f"{report.median(gbps[c]):.2f}" if gbps[c] else "-"
        tcp_pct = f"{100 * report.median(gbps[c]) / base_tcp:.1f} %" if gbps[c] and base_tcp else "-"
        rows.append([configs.LABELS[c], f"{m:,.0f}", report.spread(pps[c]), pct, f"{mc:.0f}", added,
                     tcp, tcp_pct])
    print(report.table(["configuration", "UDP pps received (median)", "pps min..max", "pps % of untraced",
                        "sender CPU ns/packet", "added CPU ns/packet", "TCP Gbit/s", "TCP % of untraced"],
                       rows))
    print(f"\nRounds: {args.rounds}, UDP {args.seconds} s and iperf3 {args.tcp_seconds} s per configuration "
          "per round; sender on CPU 0, receiver and tracers' userspace on CPU 1.")
    _print_stats(stats)
    _print_targets(pps, cpu, stats)
    _print_netbee_notes(infos)
    return 0


def _stats_trial(c: str, pair: Pair, seconds: float) -> dict:
    """One UDP trial of configuration c with BPF statistics on: each program's runs and time."""
    info: dict = {}
    kc = None
    with configs.running(c, pair, info) as pid:
        k0 = kcounters.read(pid) if c.startswith("netbee-") else None
        before = bpfstats.snapshot(pid)
        res = traffic.udp_trial(pair, seconds)
        after = bpfstats.snapshot(pid)
        if k0 is not None:
            k1 = kcounters.read(pid)
            kc = {k: k1[k] - k0[k] for k in k1}
    delta = bpfstats.delta(before, after)
    pkts = res["received"] or 1
    total = sum(st.run_time_ns for st in delta.values())
    return {"delta": delta, "udp": res, "info": info, "kcounters": kc, "total_ns": total,
            "ns_per_packet": total / pkts}


def _print_stats(stats: Dict[str, List[dict]]) -> None:
    rounds = min(len(v) for v in stats.values()) if stats else 0
    print(f"\nKernel accounting (BPF_ENABLE_STATS), {rounds} UDP trial(s) per configuration; per program the "
          "median over trials of its ns per run, runs per packet from the first trial:\n")
    rows = []
    for c, trials in stats.items():
        first = trials[0]
        pkts = first["udp"]["received"] or 1
        per_run: Dict[str, List[float]] = {}
        for t in trials:
            for st in t["delta"].values():
                if st.run_cnt:
                    per_run.setdefault(st.name, []).append(st.run_time_ns / st.run_cnt)
        for st in sorted(first["delta"].values(), key=lambda x: x.name):
            if st.run_cnt == 0:
                continue
            rows.append([c, st.name, f"{st.run_cnt:,}", f"{st.run_cnt / pkts:.2f}",
                         f"{report.median(per_run[st.name]):.0f}"])
        per_packet = [t["ns_per_packet"] for t in trials]
        rows.append([c, "**all programs**", "", "",
                     f"**{report.median(per_packet):.0f} ns per packet** ({report.spread(per_packet)})"])
    print(report.table(["configuration", "program", "runs", "runs per packet", "ns per run"], rows))


def _print_targets(pps: Dict[str, List[float]], cpu: Dict[str, List[float]], stats: Dict[str, dict]) -> None:
    print()
    if all(k in pps for k in ("none", "floor", "netbee-nomatch")):
        base, fl, nm = (report.median(pps[k]) for k in ("none", "floor", "netbee-nomatch"))
        floor_cost, nm_cost = 1 - fl / base, 1 - nm / base
        ratio = nm_cost / floor_cost if floor_cost > 0 else float("inf")
        print(f"pps lost to the floor: {100 * floor_cost:.1f} %; to netbee with a filter matching nothing: "
              f"{100 * nm_cost:.1f} %; ratio {ratio:.2f} (target <= {TARGET_NOMATCH_OVER_FLOOR}): "
              f"{report.verdict(ratio <= TARGET_NOMATCH_OVER_FLOOR)}")
        cb, cf, cn = (report.median(cpu[k]) for k in ("none", "floor", "netbee-nomatch"))
        if cf > cb:
            r = (cn - cb) / (cf - cb)
            print(f"Same from the sender's CPU time per packet: floor +{cf - cb:.0f} ns, netbee filter matching "
                  f"nothing +{cn - cb:.0f} ns; ratio {r:.2f} (target <= {TARGET_NOMATCH_OVER_FLOOR}): "
                  f"{report.verdict(r <= TARGET_NOMATCH_OVER_FLOOR)}")
        else:
            print(f"Sender CPU ns/packet: floor {cf:.0f} not above untraced {cb:.0f}: too noisy for a ratio")
    if stats.get("floor") and stats.get("netbee-nomatch"):
        pairs = list(zip(stats["floor"], stats["netbee-nomatch"]))   # trials of the same round
        ratios = [n["ns_per_packet"] / f["ns_per_packet"] for f, n in pairs if f["ns_per_packet"]]
        r = report.median(ratios) if ratios else float("inf")
        f_ns = report.median(t["ns_per_packet"] for t in stats["floor"])
        n_ns = report.median(t["ns_per_packet"] for t in stats["netbee-nomatch"])
        print(f"Same from the kernel's BPF run-time accounting: floor {f_ns:.0f} ns/packet, netbee filter matching "
              f"nothing {n_ns:.0f} ns/packet (medians); ratio {r:.2f}, the median of {len(ratios)} rounds' "
              f"({report.spread(ratios)}) (target <= {TARGET_NOMATCH_OVER_FLOOR}): "
              f"{report.verdict(r <= TARGET_NOMATCH_OVER_FLOOR)}")
    if stats.get("netbee-all") and stats.get("netbee-nomatch"):
        per_event, extra, counts = [], [], []
        for s_all, s_nm in zip(stats["netbee-all"], stats["netbee-nomatch"]):
            kc = s_all["kcounters"]
            events = kc["submitted"] + kc["lost"]   # the kernel's own count over exactly the measured trial
            if not events:
                continue
            per_event.append(s_all["total_ns"] / events)
            extra.append((s_all["ns_per_packet"] - s_nm["ns_per_packet"]) * s_all["udp"]["received"] / events)
            counts.append((events, s_all["udp"]["received"]))
        if per_event:
            pe = report.median(per_event)
            events, pkts = counts[0]
            print(f"netbee matching everything: {events:,} events for {pkts:,} packets in the first trial "
                  f"({events / max(pkts, 1):.2f} events per packet); kernel time per event {pe:.0f} ns in total "
                  f"(median of {len(per_event)} trials, {report.spread(per_event)}; hook work included), "
                  f"{report.median(extra):.0f} ns of it added by emitting the event (above the same hooks with "
                  f"nothing matching); target <= {TARGET_EVENT_NS:.0f} ns, judged on the total: "
                  f"{report.verdict(pe <= TARGET_EVENT_NS)}")
        else:
            print("netbee matching everything: no event in the kernel counters; per-event cost not computed")


def _print_netbee_notes(infos: Dict[str, List[dict]]) -> None:
    for c in ("netbee-nomatch", "netbee-all"):
        if c in infos and infos[c]:
            i = infos[c][-1]
            print(f"\n{c}: `{i.get('tracing_line', '?')}`; exit summary (last round): "
                  f"{i.get('summary')}; peak RSS {i.get('peak_rss_kb', 0) / 1024:.1f} MiB")
    print()


if __name__ == "__main__":
    sys.exit(main())
