"""Benchmark 2: where netbee's startup time goes, phase by phase.

Each sample is a fresh Python process (as a user's `netbee` is): it times the
imports, then starts netbee.tracer.Tracer (tracepoint backend, the two
benchmark namespaces) and reports StartReport.timings, which the tracer
records itself, plus the time to close everything. Medians over samples.
Then the same with the caches a user's `netbee` has (private directories here), each filled by
one unmeasured start: a new filter each time (the program cache misses, the relocated code cache,
netbee/prepcache.py, hits: the first run of a new command on a known kernel), and the same
command again (the program cache, netbee/progcache.py, hits: the pinned programs are reused).

    python3 -m bench.loader_phases [--samples N]
"""
from __future__ import annotations

import argparse
import compileall
import json
import os
import subprocess
import sys
import time
from typing import Dict, List

from bench import report, tracers
from bench.lab import Pair
from bench.traffic import OTHER_CPU


CACHE_NAME = f"nbbench{os.getpid()}"


def child(netns: List[str], cache_name: str = "", host: str = "") -> None:
    t0 = time.perf_counter()
    from netbee.tracer import TraceOptions, Tracer  # noqa: E402 - the import is what is timed
    t_import = time.perf_counter() - t0
    cache = _cache(cache_name) if cache_name else None
    prepared = _prepared(cache_name) if cache_name else None
    rules = []
    if host:
        from netbee.filter import compile_filter
        rules = compile_filter(None, hosts=[host])
    tracer = Tracer(TraceOptions(backend="tracepoint", netns=netns, cache=cache, prepared_cache=prepared,
                                 rules=rules))
    t1 = time.perf_counter()
    rep = tracer.start()
    t_start = time.perf_counter() - t1
    # what the verifier walked through for each program (kernel >= 5.16), printed by main()
    verified = {name: prog.info().verified_insns for name, prog in tracer._coll.programs.items()}
    t2 = time.perf_counter()
    tracer.close()
    t_close = time.perf_counter() - t2
    out = {"import": t_import, "start": t_start, "close": t_close, "verified_insns": verified}
    if cache is not None:
        out["cache_status"] = tracer.cache_status
        out["prepared_status"] = tracer.prepared_status
    out.update({f"tracer.{k}": v for k, v in rep.timings.items()})
    print(json.dumps(out))


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=7)
    ap.add_argument("--pin", action="store_true",
                    help=f"pin each sample to CPU {OTHER_CPU} (one CPU: no overlap of program loads)")
    ap.add_argument("--child", nargs="+", metavar="NETNS", help=argparse.SUPPRESS)
    ap.add_argument("--cache-name", default="", help=argparse.SUPPRESS)
    ap.add_argument("--host", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.cache_name, args.host)
        return 0
    # The samples import netbee from this checkout: its bytecode is brought up to date once here,
    # or with PYTHONDONTWRITEBYTECODE set every sample would compile each changed module again and
    # time that as the phases that import it.
    compileall.compile_dir(str(tracers.ROOT / "netbee"), quiet=1)
    cold: Dict[str, List[float]] = {}
    newfilter: Dict[str, List[float]] = {}
    warm: Dict[str, List[float]] = {}
    with Pair() as pair:
        def sample(cache_name: str = "", host: str = "") -> dict:
            pin = ["taskset", "-c", str(OTHER_CPU)] if args.pin else []
            res = subprocess.run(pin + [sys.executable, "-m", "bench.loader_phases", "--cache-name", cache_name,
                                        "--host", host, "--child", pair.tx, pair.rx],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tracers.ROOT))
            if res.returncode != 0:
                raise RuntimeError(f"loader_phases child failed:\n{res.stderr[-2000:]}")
            return json.loads(res.stdout.strip().splitlines()[-1])

        def record(into: Dict[str, List[float]], out: dict, want: Dict[str, str]) -> None:
            for k, v in want.items():
                got = out.pop(k, "")
                if not got.startswith(v):
                    raise RuntimeError(f"a start meant to test the caches had {k} {got!r}, not {v!r}")
            out.pop("verified_insns")
            for k, v in out.items():
                into.setdefault(k, []).append(v)

        verified: Dict[str, int] = {}
        for _ in range(args.samples):
            out = sample()
            verified = out.pop("verified_insns")
            for k, v in out.items():
                cold.setdefault(k, []).append(v)
        try:
            sample(CACHE_NAME, "10.99.0.1")  # fills both caches
            # (each new filter stores its programs too, evicting older ones: the same command
            # again is the last new one)
            for n in range(args.samples):
                record(newfilter, sample(CACHE_NAME, f"10.99.1.{n + 1}"), {"cache_status": "miss",
                                                                           "prepared_status": "hit"})
            for _ in range(args.samples):
                record(warm, sample(CACHE_NAME, f"10.99.1.{args.samples}"), {"cache_status": "hit",
                                                                             "prepared_status": "off"})
        finally:
            import shutil

            from netbee.loader import pinning
            cache = _cache(CACHE_NAME)
            cache.clear()
            pinning.remove_set(cache.bpf_dir)
            shutil.rmtree(cache.meta_dir, ignore_errors=True)
            shutil.rmtree(_prepared(CACHE_NAME).directory, ignore_errors=True)
    report.header("2. Loader phases", ["python3", "-m", "bench.loader_phases", "--samples", str(args.samples)]
                  + (["--pin"] if args.pin else []))
    for title, samples in (("Fresh load (no cache)", cold),
                           ("A new filter (program cache miss, relocated code cache hit)", newfilter),
                           ("The same command again (program cache hit)", warm)):
        rows = [[k, f"{1000 * report.median(v):.1f}", report.spread([1000 * x for x in v])]
                for k, v in samples.items()]
        print(f"{title}:\n")
        print(report.table(["phase", "ms (median)", "ms min..max"], rows))
        print()
    print("Instructions the verifier processed per program (bpf_prog_info.verified_insns, fresh load):\n")
    print(report.table(["program", "verified insns"], [[n, f"{v:,}"] for n, v in verified.items()]
                       + [["total", f"{sum(verified.values()):,}"]]))
    print()
    where = f"pinned to CPU {OTHER_CPU}" if args.pin else f"free to use all {os.cpu_count()} CPUs"
    print(f"\nSamples: {args.samples}, each a fresh process {where}. `import` = importing "
          "netbee.tracer; `start` = Tracer.start() as a whole; `tracer.*` = the phases it records itself "
          "(cumulative; `tracer.ready` and `tracer.total` are running totals from its start; "
          "`tracer.ready_cpu` = CPU time to ready, split into user (Python) and system (mostly the verifier)); "
          "`close` = Tracer.close().\n")
    return 0


def _prepared(name: str):
    from netbee import prepcache

    return prepcache.PreparedCache(os.path.join("/run/netbee", name + "-prepared"))


def _cache(name: str):
    from netbee import progcache
    from netbee.loader import pinning

    return progcache.ProgramCache(bpf_dir=os.path.join(pinning.BPFFS_ROOT, name),
                                  meta_dir=os.path.join("/run/netbee", name))


if __name__ == "__main__":
    sys.exit(main())
