"""Benchmarks 5 and 6: a flood beyond what userspace can take, and netbee's memory.

netbee (default 4 MiB ring buffer, no filter, output to /dev/null, CPU 1)
watches the two benchmark namespaces while udpblast sends as fast as it can
(CPU 0) to a port nobody listens on, so each packet yields several events plus
a drop. During the flood netbee's resident set is sampled; afterwards, once
the ring buffer has drained, the kernel's own counters are read from netbee's
`counters` and `scratch` maps (bench/kcounters.py) and compared with the command's exit summary:

  netbee:  events shown = kernel submitted,  lost shown = kernel lost

(Every event candidate ends counted once in the kernel, as filtered, submitted or lost.)

A stray packet in the namespaces (IPv6 neighbour discovery, say) can still add events between that
read and netbee's exit, so the map is read a second time after netbee exited (an fd held open
keeps it; its programs are detached, so the values are final): netbee's figures must lie between
the two reads.

    python3 -m bench.flood [--seconds S]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional

from bench import build, configs, kcounters, report, tracers
from bench.userspace import wait_idle
from bench.lab import Pair
from bench.traffic import OTHER_CPU, SEND_CPU, UDP_PORT

TARGET_RSS_MB = 60.0


def flood(pair: Pair, fmt: str, seconds: float) -> Dict[str, object]:
    args = ["--backend", "tracepoint", "--netns", pair.tx, "--netns", pair.rx] + (["--json"] if fmt == "json"
                                                                                  else [])
    with tracers.Tracer(configs.pin(tracers.netbee_argv(args)), stdout_to_null=True) as t:
        t.wait_ready(need="tracing")
        rss_ready = tracers.rss_kb(t.pid)
        snd = subprocess.Popen(pair.cmd(pair.tx, [str(build.udpblast()), "send", pair.rx_ip, str(UDP_PORT),
                                                  str(seconds)], SEND_CPU), stdout=subprocess.PIPE, text=True)
        samples: List[int] = []
        while snd.poll() is None:
            samples.append(tracers.rss_kb(t.pid))
            time.sleep(0.25)
        sent = json.loads(snd.stdout.read())
        drain_s = wait_idle(t.pid)
        with kcounters.KernelCounters(t.pid) as counters:
            kc = counters.read()
            hwm = tracers.peak_rss_kb(t.pid)
            exit_s = t.interrupt()
            kc_final = counters.read()
        summ = configs.parse_summary(t.stderr_lines)
    return {"fmt": fmt, "sent": sent, "kernel": kc, "kernel_final": kc_final, "summary": summ, "rss_ready_kb": rss_ready,
            "rss_samples_kb": samples, "hwm_kb": hwm, "exit_s": exit_s, "drain_s": drain_s,
            "summary_line": next((x for x in reversed(t.stderr_lines) if "events shown" in x), "")}


def _pair(a: int, b: int) -> str:
    return f"{a:,}" if a == b else f"{a:,} / {b:,}"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args(argv)
    # The benchmark's own threads (pipe readers) stay off the sender's CPU.
    os.sched_setaffinity(0, {OTHER_CPU})
    results = []
    with Pair() as pair:
        for fmt in ("json", "table"):
            results.append(flood(pair, fmt, args.seconds))

    report.header("5. Flood and 6. memory", ["python3", "-m", "bench.flood"] + (argv if argv is not None
                                                                              else sys.argv[1:]))
    rows = []
    ok_all = True
    worst_hwm = 0.0
    for r in results:
        kc, kf, sm = r["kernel"], r["kernel_final"], r["summary"]
        shown_ok = kc["submitted"] <= sm.get("shown", -1) <= kf["submitted"]
        lost_ok = kc["lost"] <= sm.get("lost", -1) <= kf["lost"]
        ok_all &= shown_ok and lost_ok
        s = r["rss_samples_kb"]
        q = s[len(s) // 4] if s else 0
        worst_hwm = max(worst_hwm, r["hwm_kb"] / 1024)
        rows.append([r["fmt"], f"{r['sent']['pps']:,.0f}", f"{kc['filtered']:,}",
                     _pair(kc["submitted"], kf["submitted"]), _pair(kc["lost"], kf["lost"]),
                     f"{sm.get('shown', '?'):,}",
                     f"{sm.get('lost', '?'):,}",
                     "yes" if shown_ok and lost_ok else "NO",
                     f"{r['rss_ready_kb'] / 1024:.1f} / {q / 1024:.1f} / {max(s or [0]) / 1024:.1f} / "
                     f"{(s[-1] if s else 0) / 1024:.1f}", f"{r['hwm_kb'] / 1024:.1f}", f"{r['drain_s']:.1f}", f"{r['exit_s']:.2f}"])
    print(report.table(["output", "pps sent", "kernel filtered", "kernel submitted (at drain / final)",
                        "kernel lost (at drain / final)", "netbee shown", "netbee lost", "adds up", "RSS MiB ready / 25 % / max / end",
                        "peak RSS MiB", "drain s", "Ctrl-C to exit s"], rows))
    print(f"\nFlood of {args.seconds} s per output format; RSS sampled every 0.25 s; \"drain s\": time after "
          "the flood until netbee's CPU use fell below 4 % (ring buffer emptied), before the counters are read.")
    for r in results:
        print(f"- {r['fmt']}: `{r['summary_line']}`")
    for r in results:
        beyond = r["kernel"]["lost"] > 0
        print(f"- {r['fmt']}: " + ("the flood exceeded what netbee could take (events were lost, and counted)"
                                   if beyond else "NOT a flood for this output: the kernel side could not "
                                   "produce events faster than netbee took them, nothing was lost"))
    print(f"\nnetbee's figures match the kernel's counters in every run: {report.verdict(ok_all)}")
    print(f"Peak RSS {worst_hwm:.1f} MiB (target <= {TARGET_RSS_MB:.0f} MB): "
          f"{report.verdict(worst_hwm * 1.048576 <= TARGET_RSS_MB)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
