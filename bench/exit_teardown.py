"""Diagnostic for the exit target: how long Python's own teardown takes after the tracer is closed.

A child process starts and closes a Tracer, prints a marker on stderr, then
either returns normally (the interpreter frees every object: the kernel BTF
index alone is hundreds of thousands) or calls os._exit(0). The time from the
marker to the process being gone is what the interpreter's teardown adds to Ctrl-C.

    python3 -m bench.exit_teardown [--samples N]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import List, Optional

from bench import report, tracers
from bench.lab import Pair

CHILD = """
import os, sys
from netbee.tracer import TraceOptions, Tracer
t = Tracer(TraceOptions(backend="tracepoint", netns=sys.argv[2:]))
t.start()
t.close()
print("closed", file=sys.stderr, flush=True)
if sys.argv[1] == "os._exit":
    os._exit(0)
"""


def one(pair: Pair, mode: str) -> float:
    env = dict(os.environ, PYTHONPATH=str(tracers.ROOT))
    # Netfilter links only in the benchmark's own namespaces, never the init netns.
    p = subprocess.Popen([sys.executable, "-c", CHILD, mode, pair.tx, pair.rx], stderr=subprocess.PIPE, env=env)
    t0 = None
    seen = []
    for line in p.stderr:
        if line.startswith(b"closed"):
            t0 = time.monotonic()
            break
        seen.append(line.decode(errors="replace"))
    p.wait()
    if t0 is None or p.returncode != 0:
        raise RuntimeError(f"exit_teardown child ({mode}) failed with {p.returncode}:\n{''.join(seen[-20:])}")
    return time.monotonic() - t0


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=5)
    args = ap.parse_args(argv)
    res = {"return normally": [], "os._exit(0)": []}
    with Pair() as pair:
        for _ in range(args.samples):
            res["return normally"].append(one(pair, "return"))
            res["os._exit(0)"].append(one(pair, "os._exit"))
    report.header("Diagnostic: interpreter teardown at exit", ["python3", "-m", "bench.exit_teardown"] +
                  (argv if argv is not None else sys.argv[1:]))
    print(report.table(["after Tracer.close()", "ms to exit (median)", "ms min..max"],
                       [[k, f"{1000 * report.median(v):.0f}", report.spread([1000 * x for x in v])]
                        for k, v in res.items()]))
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
