"""Benchmark 4: events per second netbee's userspace reads, decodes and renders, on one core.

Two measurements per output format (--json, and the table), netbee pinned to CPU 1:

- capacity: netbee -c N with a ring buffer large enough to hold the whole
  backlog (so nothing is lost), the UDP sender flat out on CPU 0. netbee's CPU
  time from its `netbee: tracing` line to its exit (rusage) is taken for
  N/5 and for N events; the steady cost per event is the difference in CPU
  over the difference in events (one-time costs such as resolvers loading on
  first use cancel); capacity = 1 / that. Also the wall-clock rate
  N / (exit - first packet), lower when the kernel side cannot produce events
  as fast as userspace takes them.
- live without loss: the sender paced so that events arrive at a set rate
  for a few seconds, netbee with its default ring buffer; the exit summary
  must say 0 lost. The rate starts at 60 % of the measured capacity and steps
  down until a run is lossless.

    python3 -m bench.userspace [--rounds N] [--events N]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

from bench import build, configs, kcounters, report, tracers
from bench.lab import Pair
from bench.traffic import OTHER_CPU, SEND_CPU, UDP_PORT

TARGET_JSON_EPS = 200_000
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait_idle(pid: int, limit: float = 60.0) -> float:
    """Wait until netbee has drained its ring buffer: its CPU use drops to almost nothing.
    Returns the seconds it took."""
    t0 = time.monotonic()
    last = _cpu_seconds(pid)
    while time.monotonic() - t0 < limit:
        time.sleep(0.25)
        now = _cpu_seconds(pid)
        if now - last <= 0.01:
            return time.monotonic() - t0
        last = now
    raise RuntimeError(f"netbee still busy {limit}s after the traffic stopped")


def _wait_rusage(t: tracers.Tracer, timeout: float) -> Tuple[float, float]:
    """Wait for the process to exit by itself; (exit time, CPU seconds of its whole life)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, ru = os.wait4(t.pid, os.WNOHANG)
        if pid == t.pid:
            t.proc.returncode = os.waitstatus_to_exitcode(status)
            return time.monotonic(), ru.ru_utime + ru.ru_stime
        time.sleep(0.002)
    t.kill()
    raise RuntimeError(f"netbee did not reach its count within {timeout}s:\n" + "\n".join(t.stderr_lines[-5:]))


def _sender(pair: Pair, seconds: float, rate: float) -> subprocess.Popen:
    # Nobody listens on the port in rx: the receiver would compete with netbee for CPU 1. Each
    # packet then also brings a kfree_skb (NO_SOCKET) event and an ICMP error back: all events.
    return subprocess.Popen(pair.cmd(pair.tx, [str(build.udpblast()), "send", pair.rx_ip, str(UDP_PORT),
                                               str(seconds), str(rate)], SEND_CPU),
                            stdout=subprocess.PIPE, text=True)


def capacity(pair: Pair, fmt: str, events: int) -> Dict[str, float]:
    args = ["--backend", "tracepoint", "--netns", pair.tx, "--netns", pair.rx, "-c", str(events),
            "--ringbuf-size", "256M"] + (["--json"] if fmt == "json" else [])
    with tracers.Tracer(configs.pin(tracers.netbee_argv(args)), stdout_to_null=True) as t:
        t.wait_ready(need="tracing")
        cpu0 = _cpu_seconds(t.pid)
        t_send = time.monotonic()
        snd = _sender(pair, 60, 0)
        try:
            t_exit, cpu = _wait_rusage(t, 120)
        finally:
            snd.terminate()
            snd.wait()
        for th in t._threads:
            th.join(timeout=5)
        summ = configs.parse_summary(t.stderr_lines)
    busy = cpu - cpu0
    return {"cpu_s": busy, "events": events, "cpu_per_event_us": 1e6 * busy / events,
            "capacity_eps": events / busy, "wall_eps": events / (t_exit - t_send), "lost": summ.get("lost", -1),
            "shown": summ.get("shown", -1)}


def live(pair: Pair, fmt: str, eps: float, seconds: float, events_per_packet: float) -> Dict[str, float]:
    args = ["--backend", "tracepoint", "--netns", pair.tx, "--netns", pair.rx] + (["--json"] if fmt == "json"
                                                                                  else [])
    with tracers.Tracer(configs.pin(tracers.netbee_argv(args)), stdout_to_null=True) as t:
        t.wait_ready(need="tracing")
        snd = _sender(pair, seconds, eps / events_per_packet)
        out, _ = snd.communicate()
        wait_idle(t.pid)  # netbee has drained what is queued
        t.interrupt()
        summ = configs.parse_summary(t.stderr_lines)
    sent = json.loads(out)
    return {"offered_eps": eps, "achieved_pps": sent["pps"], "shown": summ.get("shown", -1),
            "lost": summ.get("lost", -1), "shown_eps": summ.get("shown", 0) / sent["seconds"]}


def events_per_packet(pair: Pair) -> float:
    """How many events one probe packet yields with no filter, from the kernel's own counters."""
    args = ["--backend", "tracepoint", "--netns", pair.tx, "--netns", pair.rx, "--json"]
    with tracers.Tracer(configs.pin(tracers.netbee_argv(args)), stdout_to_null=True) as t:
        t.wait_ready(need="tracing")
        k0 = kcounters.read(t.pid)
        snd = _sender(pair, 1.0, 1000)
        out, _ = snd.communicate()
        time.sleep(0.2)  # the last packet's ICMP error and drop
        k1 = kcounters.read(t.pid)
        t.interrupt()
    events = sum(k1[k] - k0[k] for k in ("submitted", "lost"))
    return events / json.loads(out)["sent"]


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--live-seconds", type=float, default=3.0)
    args = ap.parse_args(argv)
    # The benchmark's own threads (pipe readers) stay off the sender's CPU.
    os.sched_setaffinity(0, {OTHER_CPU})
    caps: Dict[str, List[Dict[str, float]]] = {"json": [], "table": []}
    lives: Dict[str, List[Dict[str, float]]] = {"json": [], "table": []}
    with Pair() as pair:
        epp = events_per_packet(pair)
        for _ in range(args.rounds):
            for fmt in caps:
                small = capacity(pair, fmt, args.events // 5)
                big = capacity(pair, fmt, args.events)
                # One-time costs after the `tracing` line (resolvers loading on first use...) cancel out.
                big["steady_us"] = 1e6 * (big["cpu_s"] - small["cpu_s"]) / (big["events"] - small["events"])
                big["steady_eps"] = 1e6 / big["steady_us"] if big["steady_us"] > 0 else float("inf")
                big["lost"] += small["lost"]
                caps[fmt].append(big)
        for fmt in caps:
            eps = 0.6 * report.median(c["steady_eps"] for c in caps[fmt])
            for _ in range(4):
                res = live(pair, fmt, eps, args.live_seconds, epp)
                lives[fmt].append(res)
                if res["lost"] == 0:
                    break
                eps *= 0.7

    report.header("4. Userspace: decode and render", ["python3", "-m", "bench.userspace"] +
                  (argv if argv is not None else sys.argv[1:]))
    rows = []
    for fmt, cs in caps.items():
        rows.append([fmt, f"{report.median(c['steady_eps'] for c in cs):,.0f}",
                     f"{report.median(c['steady_us'] for c in cs):.2f}",
                     f"{report.median(c['capacity_eps'] for c in cs):,.0f}",
                     f"{report.median(c['wall_eps'] for c in cs):,.0f}",
                     ", ".join(str(int(c["lost"])) for c in cs)])
    print(report.table(["output", "steady events/s per core (median)", "steady CPU us/event",
                        f"events/s per core incl. one-time costs (-c {args.events})", "events/s wall clock",
                        "lost per round"], rows))
    print(f"\nRounds: {args.rounds}, each a run of -c {args.events // 5} and one of -c {args.events}, with "
          f"--ringbuf-size 256M; steady = (CPU of the long run - CPU of the short run) / (difference in events), "
          f"so one-time costs after the `tracing` line cancel. {epp:.2f} events per UDP packet (no listener: each "
          "packet also yields a drop and an ICMP error).\n")
    rows = [[fmt, f"{r['offered_eps']:,.0f}", f"{r['achieved_pps']:,.0f}", f"{r['shown_eps']:,.0f}",
             int(r["lost"])] for fmt, rs in lives.items() for r in rs]
    print(report.table(["output", "events/s offered", "packets/s achieved", "events/s shown", "lost"], rows))
    js = report.median(c["steady_eps"] for c in caps["json"])
    print(f"\nJSON capacity {js:,.0f} events/s per core (target >= {TARGET_JSON_EPS:,}): "
          f"{report.verdict(js >= TARGET_JSON_EPS)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
