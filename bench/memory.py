"""Diagnostic for target 6: where netbee's resident memory goes, step by step, in a fresh process.

Resident set (VmRSS) after each step of a start like the command's and the
resident size of the BPF map mappings (/proc/self/smaps); then, in a second
process, the largest Python allocation sites (tracemalloc) once the tracer runs; then the
`netbee` command itself: VmRSS and VmHWM (peak, start-up included) at its `tracing` line and
after a few seconds of tracing pings (every packet shown, JSON to /dev/null), medians of runs.

    python3 -m bench.memory
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import List, Optional

from bench import report, tracers
from bench.lab import Pair


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _smaps_rss_by_name() -> dict:
    out: dict = {}
    name = ""
    with open("/proc/self/smaps") as f:
        for line in f:
            parts = line.split()
            if parts and "-" in parts[0] and len(parts) >= 5 and ":" not in parts[0]:
                name = parts[5] if len(parts) > 5 else "[anon]"
            elif parts and parts[0] == "Rss:":
                out[name] = out.get(name, 0) + int(parts[1])
    return out


def child(netns: List[str], heap: bool) -> None:
    """heap=False: resident set per step, nothing else running; heap=True: tracemalloc's view."""
    import tracemalloc

    steps = [("python", _rss_kb())]
    import netbee.cli  # noqa: F401 - what the command imports
    from netbee.tracer import TraceOptions, Tracer
    steps.append(("imports (netbee.cli, netbee.tracer)", _rss_kb()))
    if heap:
        tracemalloc.start(1)
    tracer = Tracer(TraceOptions(backend="tracepoint", netns=netns))
    tracer.start()
    steps.append(("+ Tracer.start()", _rss_kb()))
    out = {"steps": steps}
    if heap:
        snap = tracemalloc.take_snapshot()
        out["top"] = [(str(s.traceback[0]), s.size // 1024, s.count) for s in snap.statistics("lineno")[:12]]
        out["py_heap_kb"] = sum(s.size for s in snap.statistics("filename")) // 1024
    else:
        out["bpf_maps_rss_kb"] = sum(v for k, v in _smaps_rss_by_name().items() if "bpf" in k)
    tracer.close()
    steps.append(("after Tracer.close()", _rss_kb()))
    print(json.dumps(out))


def _run_child(pair: Pair, mode: str) -> dict:
    res = subprocess.run([sys.executable, "-m", "bench.memory", mode, pair.tx, pair.rx],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tracers.ROOT))
    if res.returncode != 0:
        raise RuntimeError(f"bench.memory child failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def command_peaks(pair: Pair, runs: int = 3, seconds: float = 3.0) -> List[dict]:
    """VmRSS/VmHWM of `netbee --netns <tx> --json` at ready and after `seconds` of pings."""
    # the first run finds the caches empty: a fresh load, and the programs for any filter loaded
    # in the background while it traces (the most memory a run takes); the others reuse them
    subprocess.run(tracers.netbee_argv(["--clear-cache"]), check=True, stderr=subprocess.DEVNULL)
    out = []
    for _ in range(runs):
        ping = None
        with tracers.Tracer(tracers.netbee_argv(["--netns", pair.tx, "--json"]), stdout_to_null=True) as t:
            t.wait_ready(need="tracing")
            at_ready = (tracers.rss_kb(t.pid), tracers.peak_rss_kb(t.pid))
            ping = subprocess.Popen(pair.cmd(pair.tx, ["ping", "-q", "-i", "0.01", pair.rx_ip]),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(seconds)
                traced = (tracers.rss_kb(t.pid), tracers.peak_rss_kb(t.pid))
            finally:
                ping.kill()
                ping.wait()
            t.interrupt()
        out.append({"ready_rss": at_ready[0], "ready_hwm": at_ready[1],
                    "trace_rss": traced[0], "trace_hwm": traced[1]})
    return out


def main(argv: Optional[List[str]] = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] in ("--rss", "--heap"):
        child(argv[1:], heap=argv[0] == "--heap")
        return 0
    with Pair() as pair:
        rss = _run_child(pair, "--rss")
        data = _run_child(pair, "--heap")
        peaks = command_peaks(pair)
    report.header("Diagnostic: where the resident memory goes", ["python3", "-m", "bench.memory"])
    print(report.table(["step", "VmRSS MiB"], [[s, f"{kb / 1024:.1f}"] for s, kb in rss["steps"]]))
    print(f"\nOf that, resident BPF map mappings (the ring buffer, mapped twice): "
          f"{rss['bpf_maps_rss_kb'] / 1024:.1f} MiB. In a second process with tracemalloc on, the Python heap "
          f"held after Tracer.start() is {data['py_heap_kb'] / 1024:.1f} MiB; largest allocation sites:\n")
    print(report.table(["site", "KiB", "objects"], [[f"`{a}`", f"{b:,}", f"{c:,}"] for a, b, c in data["top"]]))
    keys = [("ready_rss", "VmRSS at `tracing`"), ("ready_hwm", "VmHWM at `tracing`"),
            ("trace_rss", "VmRSS after 3 s of pings"), ("trace_hwm", "VmHWM after 3 s of pings")]
    print(f"\nThe `netbee --netns <tx> --json` command ({len(peaks)} runs, the first with empty caches; ping "
          "every 10 ms, every packet shown):\n")
    print(report.table(["measure", "MiB (median)", "MiB min..max"],
                       [[label, f"{report.median(p[k] for p in peaks) / 1024:.1f}",
                         report.spread([p[k] / 1024 for p in peaks])] for k, label in keys]))
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
