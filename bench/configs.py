"""The tracing configurations the kernel-cost benchmark compares, each a context manager.

Entering one starts the tracer and returns once it is attached; the value is
the pid whose BPF programs belong to it (for bpfstats) or None. Userspace of
every tracer is pinned to CPU 1, away from the sender's CPU 0.
"""
from __future__ import annotations

import contextlib
import os
import re
from typing import Dict, Iterator, List, Optional

from bench import tracers
from bench.floor import Floor
from bench.lab import Pair
from bench.traffic import OTHER_CPU

NOMATCH_EXPR = "host 10.208.9.9"   # inside the benchmark's prefix, carried by no packet

CONFIGS = ("none", "floor", "netbee-nomatch", "netbee-all", "bpftrace-nomatch", "bpftrace-all")
LABELS = {
    "none": "no tracing",
    "floor": "floor (same hooks, programs return at once)",
    "netbee-nomatch": f"netbee --json, filter matching nothing ('{NOMATCH_EXPR}')",
    "netbee-all": "netbee --json > /dev/null, no filter (every packet)",
    "bpftrace-nomatch": "bpftrace nomatch.bt (5 tracepoints, reads IPv4 header, prints nothing)",
    "bpftrace-all": "bpftrace all.bt > pipe (5 tracepoints, one line per hook per packet)",
}


def pin(argv: List[str]) -> List[str]:
    return ["taskset", "-c", str(OTHER_CPU)] + argv


def netbee_argv(pair: Pair, expr: Optional[str]) -> List[str]:
    """netbee watching both benchmark namespaces, JSON lines on stdout. --no-cache: every run loads
    the command's own programs (the filter compiled in); with the cache, the first run of a
    filter would run the slower programs for any filter (README, "Start-up and the program cache")."""
    args = ["--backend", "tracepoint", "--netns", pair.tx, "--netns", pair.rx, "--json", "--no-cache"]
    if expr:
        args.append(expr)
    return pin(tracers.netbee_argv(args))


@contextlib.contextmanager
def running(config: str, pair: Pair, info: Dict[str, object]) -> Iterator[Optional[int]]:
    """Run the body under config; fills info (netbee's summary, bpftrace's output line count)."""
    if config == "none":
        yield None
    elif config == "floor":
        with Floor([pair.tx, pair.rx]) as fl:
            info["links"] = len(fl.links)
            yield os.getpid()
    elif config.startswith("netbee-"):
        argv = netbee_argv(pair, NOMATCH_EXPR if config == "netbee-nomatch" else None)
        with tracers.Tracer(argv, stdout_to_null=True) as t:
            t.wait_ready(need="tracing")
            info["tracing_line"] = next(line for line in t.stderr_lines if line.startswith("netbee: tracing"))
            try:
                yield t.pid
                info["peak_rss_kb"] = tracers.peak_rss_kb(t.pid)
            finally:
                info["exit_s"] = t.interrupt()
                info["stderr"] = t.stderr_lines
                info["summary"] = parse_summary(t.stderr_lines)
    elif config.startswith("bpftrace-"):
        tracers.ensure_tracefs()
        script = "nomatch.bt" if config == "bpftrace-nomatch" else "all.bt"
        with tracers.Tracer(pin(tracers.bpftrace_argv(script))) as t:
            t.wait_ready(need="stdout:ready")
            try:
                yield t.pid
                info["peak_rss_kb"] = tracers.peak_rss_kb(t.pid)
            finally:
                t.interrupt()
                info["lines"] = t.stdout_lines
                info["stderr"] = t.stderr_lines
    else:
        raise ValueError(f"unknown config {config!r}")


_NUM = r"([0-9][0-9,]*)"


def parse_summary(lines: List[str]) -> Dict[str, int]:
    """Counts from netbee's exit summary on stderr: events shown, filtered, lost (and seen/submitted
    when printed). Missing keys are simply absent; callers report them as unknown."""
    text = "\n".join(line for line in lines if line.startswith("netbee:") or line.startswith("  "))
    out: Dict[str, int] = {}
    for key, pat in (("shown", r"{n}\s+events?\s+shown"), ("shown", r"shown[:= ]+{n}"),
                     ("filtered", r"{n}\s+filtered"), ("filtered", r"filtered[^:=0-9]*[:= ]+{n}"),
                     ("lost", r"{n}\s+lost"), ("lost", r"lost[:= ]+{n}"),
                     ("seen", r"{n}\s+seen"), ("seen", r"seen[:= ]+{n}"),
                     ("submitted", r"{n}\s+submitted"), ("submitted", r"submitted[:= ]+{n}"),
                     ("received", r"{n}\s+received"), ("received", r"received[:= ]+{n}")):
        if key in out:
            continue
        m = re.search(pat.format(n=_NUM), text)
        if m:
            out[key] = int(m.group(1).replace(",", ""))
    return out
