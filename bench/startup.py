"""Benchmark 1: launch to ready, and Ctrl-C to exit, netbee against bpftrace.

netbee is ready at its `netbee: tracing` line (every hook of the backend
attached). It is measured four ways: "netbee" as a user meets it running a command again (the
programs an earlier run of the same command pinned are reused, netbee/progcache.py), "netbee-new"
with a filter not used before in each round (it starts on the cached programs for any filter,
TraceOptions.any_filter_programs, while its own load in the background), "netbee-reboot" with the
program cache and /run/netbee emptied before each round as a reboot empties them (a fresh load,
but the relocated code and the kernel facts come from /var/cache/netbee, kept across boots), and
"netbee-cold" with
--no-cache (everything afresh: the first run on a new kernel). One unmeasured run of
WARMUP_S seconds fills the caches first: the programs of its command, and those for any filter
that it loads in the background (a user's first trace after boot). bpftrace prints nothing once attached, so it is ready at its first
event line: a ping every 2 ms between the benchmark's namespaces makes an
attached probe fire within a few ms. Each round launches the tools in turn,
the same way (from the init netns, on all CPUs or with --pin taskset to CPU 1; netbee gets --netns),
and the medians are compared.

    python3 -m bench.startup [--rounds N] [--tools LIST] [--tree NAME=DIR ...]

--tree adds tool `cold@NAME`: the netbee of another checkout with --no-cache, measured in the same
rounds as this checkout's (e.g. the commit before a change to the fresh load, side by side).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import time
from typing import Dict, List

from bench import report, tracers
from bench.lab import Pair
from bench.traffic import OTHER_CPU

TARGET_RATIO = 1.2
TARGET_READY_S = 0.6
TARGET_EXIT_S = 0.2
WARMUP_S = 3.0          # the unmeasured first run: long enough for its background load


def _python_floor() -> float:
    """Seconds for the interpreter alone to start and exit: part of any Python tool's startup."""
    python = tracers.SYSTEM_PYTHON if os.path.exists(tracers.SYSTEM_PYTHON) else sys.executable
    t0 = time.monotonic()
    subprocess.run([python, "-c", "pass"], check=True)
    return time.monotonic() - t0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process, its exited threads included (/proc/PID/stat;
    10 ms ticks). On this shared machine the wall time swings with the other tenants' load; the
    CPU time a tool needed to get ready barely does."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def per_round_ratios(mine: List[float], theirs: List[float]) -> List[float]:
    """mine[r] / theirs[r] for every round both have."""
    return [a / b for a, b in zip(mine, theirs) if b > 0]


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tools", default="netbee,netbee-new,netbee-reboot,netbee-cold,bt1,bt5",
                    help="comma list of: netbee, netbee-new, netbee-reboot, netbee-cold, bt1, bt5")
    ap.add_argument("--pin", action="store_true",
                    help=f"pin the tools (and this script) to CPU {OTHER_CPU}; default: all CPUs, as a user runs them")
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=DIR",
                    help="add tool cold@NAME: the netbee of checkout DIR with --no-cache (repeatable)")
    args = ap.parse_args(argv)
    trees = {}
    for spec in args.tree:
        name, sep, tree = spec.partition("=")
        if not sep or not name or not os.path.isdir(os.path.join(tree, "netbee")):
            ap.error(f"--tree {spec!r}: want NAME=DIR with a netbee checkout in DIR")
        trees[name] = os.path.abspath(tree)
    if args.pin:
        # The benchmark's own threads (pipe readers) stay off the sender's CPU.
        os.sched_setaffinity(0, {OTHER_CPU})

    def pin(cmd: List[str]) -> List[str]:
        return ["taskset", "-c", str(OTHER_CPU)] + cmd if args.pin else cmd
    tracers.ensure_tracefs()
    samples: Dict[str, Dict[str, List[float]]] = {}
    with Pair() as pair:
        trickle = subprocess.Popen(pair.cmd(pair.tx, ["ping", "-q", "-i", "0.002", pair.rx_ip]),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            tools = {  # bpftrace stays in the init netns: `ip netns exec` remounts /sys without tracefs
                "netbee": ("netbee (tracepoint backend, all hooks; cached programs)",
                    pin(tracers.installed_netbee_argv(["--netns", pair.tx, "--json"])), "tracing"),
                "netbee-new": ("netbee -H <new address each round> (tracepoint backend, all hooks; "
                               "started on the cached programs for any filter)",
                    pin(tracers.installed_netbee_argv(["--netns", pair.tx, "--json"])), "tracing"),
                "netbee-reboot": ("netbee after a reboot (tracepoint backend, all hooks; program cache "
                                  "emptied, relocated code cached)",
                    pin(tracers.installed_netbee_argv(["--netns", pair.tx, "--json"])), "tracing"),
                "netbee-cold": ("netbee --no-cache (tracepoint backend, all hooks; fresh load)",
                    pin(tracers.installed_netbee_argv(["--netns", pair.tx, "--json", "--no-cache"])), "tracing"),
                "bt1": ("bpftrace, 1 tracepoint",
                        pin(tracers.bpftrace_argv("startup_one.bt")), "event"),
                "bt5": ("bpftrace, netbee's 5 tracepoints",
                        pin(tracers.bpftrace_argv("startup_all.bt")), "event"),
            }
            for name, tree in trees.items():
                tools[f"cold@{name}"] = (f"netbee --no-cache of {name} ({tree})", pin(tracers.installed_netbee_argv(
                    ["--netns", pair.tx, "--json", "--no-cache"], root=pathlib.Path(tree))), "tracing")
            wanted = args.tools.split(",") + [f"cold@{name}" for name in trees]
            unknown = set(wanted) - set(tools)
            if unknown:
                ap.error(f"unknown tools: {sorted(unknown)}")
            def warm_up() -> None:
                """Empty caches, then one run of WARMUP_S that fills them (not measured): the
                command's own programs and, loaded in the background, those for any filter."""
                subprocess.run(tracers.installed_netbee_argv(["--clear-cache"]), check=True,
                               stderr=subprocess.DEVNULL)
                with tracers.Tracer(tools["netbee"][1]) as t:
                    t.wait_ready(need="tracing")
                    time.sleep(WARMUP_S)   # its background load of the programs for any filter
                    t.interrupt()

            if {"netbee", "netbee-new", "netbee-reboot"} & set(wanted):
                warm_up()
            for rnd in range(args.rounds):
                for key in wanted:
                    name, cmd, need = tools[key]
                    if key == "netbee-new":
                        cmd = cmd + ["-H", f"10.99.{rnd}.1"]   # matches nothing; new each round
                    if key == "netbee-reboot":
                        # what a reboot leaves: no loaded programs, an empty /run (the memo of the
                        # kernel BTF's checksum), the files in /var/cache/netbee
                        subprocess.run(tracers.installed_python_argv(
                            ["-c", "from netbee.progcache import ProgramCache; ProgramCache().clear()\n"
                                   "import os, netbee.prepcache as p\n"
                                   "try: os.remove(os.path.join(p.MEMO_DIR, 'kernel-btf-identity.json'))\n"
                                   "except FileNotFoundError: pass"]), check=True)
                    with tracers.Tracer(cmd) as t:
                        ready = t.wait_ready(need=need)
                        cpu_ready = cpu_s(t.pid)   # read right after the line: a few ms late at most
                        time.sleep(0.3)  # let it settle into its steady loop before Ctrl-C
                        exit_s = t.interrupt()
                    s = samples.setdefault(name, {"ready": [], "exit": [], "cpu": []})
                    s["ready"].append(ready)
                    s["cpu"].append(cpu_ready)
                    s["exit"].append(exit_s)
                    if need == "tracing" and t.t_first_event is not None:
                        s.setdefault("first_event", []).append(t.t_first_event - t.t_launch)
                    summ = t.stderr_after_sigint("events shown")
                    if summ is not None:
                        s.setdefault("summary", []).append(summ)
                    if key == "netbee-reboot":
                        warm_up()   # the caches as the other rows expect them
            py = report.median(_python_floor() for _ in range(5))
        finally:
            trickle.kill()
            trickle.wait()

    report.header("1. Startup and exit", ["python3", "-m", "bench.startup", "--rounds", str(args.rounds)]
                  + (["--tools", args.tools] if args.tools != ap.get_default("tools") else [])
                  + [f"--tree={t}" for t in args.tree] + (["--pin"] if args.pin else []))
    rows = []
    for name, s in samples.items():
        fe = f"{report.median(s['first_event']):.3f}" if s.get("first_event") else "-"
        sm = f"{report.median(s['summary']):.3f}" if s.get("summary") else "-"
        rows.append([name, f"{report.median(s['ready']):.3f}", report.spread(s["ready"]),
                     f"{report.median(s['cpu']):.3f}", report.spread(s["cpu"]), fe,
                     f"{report.median(s['exit']):.3f}", report.spread(s["exit"]), sm])
    print(report.table(["tool", "ready s (median)", "ready min..max", "CPU s to ready (median)", "CPU min..max",
                        "first event s", "Ctrl-C to exit s", "exit min..max", "Ctrl-C to summary line s"], rows))
    where = f"pinned to CPU {OTHER_CPU}" if args.pin else "unpinned (all CPUs)"
    print(f"\nRounds: {args.rounds}; tools {where}. Python interpreter start+exit alone: {py:.3f} s.")
    names = {key: tools[key][0] for key in wanted}
    if "netbee-cold" in names:
        cold = report.median(samples[names["netbee-cold"]]["ready"])
        for name in trees:
            theirs = samples[names[f"cold@{name}"]]["ready"]
            ratios = per_round_ratios(samples[names["netbee-cold"]]["ready"], theirs)
            print(f"netbee --no-cache ready {cold:.3f} s; {name}'s {report.median(theirs):.3f} s: this checkout's / "
                  f"{name}'s = {report.median(ratios):.2f}x (median of the rounds' ratios, {report.spread(ratios)})")
    if "bt1" not in names:
        print("(targets need bt1)\n")
        return 0
    bt1 = samples[names["bt1"]]["ready"]

    def against_bpftrace(key: str) -> tuple:
        """(median ready s, median of the per-round ratios to bpftrace, their text): each round runs
        the tools back to back, so a ratio within a round is not moved by the machine's drift
        between rounds (the ratio of the medians is printed beside it)."""
        mine = samples[names[key]]["ready"]
        ratios = per_round_ratios(mine, bt1)
        r = report.median(ratios)
        text = (f"{r:.2f}x bpftrace 1 tracepoint (median of {len(ratios)} rounds' ratios, "
                f"{report.spread(ratios)}; ratio of the medians {report.median(mine) / report.median(bt1):.2f}x)")
        return report.median(mine), r, text

    for key, what in (("netbee", "(the same command again)"),
                      ("netbee-new", "with a new filter (first run of a command after the first trace of the boot)"),
                      ("netbee-reboot", "after a reboot (first run of the boot on a kernel netbee has run on)"),
                      ("netbee-cold", "--no-cache (first run on a new kernel)")):
        if key in names:
            ready, ratio, text = against_bpftrace(key)
            print(f"netbee {what} ready {ready:.3f} s = {text} (target <= {TARGET_RATIO}x): "
                  f"{report.verdict(ratio <= TARGET_RATIO)}; <= {TARGET_READY_S} s: {report.verdict(ready <= TARGET_READY_S)}")
    if "netbee" in names:
        nb_exit = report.median(samples[names["netbee"]]["exit"])
        print(f"netbee CPU time to ready {report.median(samples[names['netbee']]['cpu']):.3f} s "
              f"(bpftrace 1 tracepoint: {report.median(samples[names['bt1']]['cpu']):.3f} s; with two "
              "CPUs the program loads overlap, so netbee's wall time can be below its CPU time)")
        print(f"netbee Ctrl-C to exit {nb_exit:.3f} s (target <= {TARGET_EXIT_S} s): "
              f"{report.verdict(nb_exit <= TARGET_EXIT_S)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
