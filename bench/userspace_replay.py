"""Diagnostic for target 4: the command's whole userspace path (ring buffer read -> decode ->
render -> write) of two checkouts, side by side, on the same real records.

Records are captured once from a live trace (bench.userspace_breakdown.capture: paced UDP between
the benchmark namespaces) and laid out as a BPF ring buffer holds them (8-byte headers, 8-byte
alignment). Each checkout then replays them in its own process through its own code: its
RingCursor over that memory, its Tracer's read path, its renderer and its cli._show loop writing to
/dev/null, exactly as `netbee [--json]` runs. Only the kernel side (epoll, page faults on the real
mapping) is left out.

Two measures:
- CPU time (time.process_time) per event, the checkouts alternating round by round, each process
  pinned to the same CPU; medians and their ratio (the machine is shared and noisy: compare
  only within one run);
- with --callgrind, instructions per event under valgrind (repeatable): each checkout's run of one
  pass minus its run of none, over the number of records.

    python3 -m bench.userspace_replay --before /tmp/nb-old [--rounds 7] [--packets 5000] [--callgrind]

The worker (`--worker`) imports only netbee, from the checkout on its PYTHONPATH.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

HDR = struct.Struct("=I4x")    # a ring buffer record header: length, then the page offset (unused)
FIXED_CLOCK_OFFSET = 1_764_000_000.123457   # monotonic -> wall clock, when outputs are compared


def ring_image(records: Sequence[bytes]) -> bytes:
    """The records as the kernel lays them out in a ring buffer's data area."""
    out = bytearray()
    for r in records:
        out += HDR.pack(len(r)) + r
        out += bytes(-len(out) % 8)
    return bytes(out)


# ----------------------------------------------------------------------------- worker (one checkout)

class _ReplayReader:
    """RingBufReader's read methods over an in-memory ring image, with the checkout's own RingCursor."""

    def __init__(self, image: bytes) -> None:
        from netbee.loader.ringbuf import RingCursor
        size = 1 << max(12, (len(image) - 1).bit_length())
        self.data = bytearray(2 * size)
        self.data[:len(image)] = image
        self.cons, self.prod = bytearray(8), bytearray(8)
        struct.pack_into("=Q", self.prod, 0, len(image))
        self.cursor = RingCursor(memoryview(self.cons), memoryview(self.prod), memoryview(self.data), size)
        self.size = size

    def rewind(self) -> None:
        struct.pack_into("=Q", self.cons, 0, 0)

    def read(self, timeout: Optional[float] = 0.0, copy: bool = True, limit: Optional[int] = None) -> list:
        self.cursor.commit()
        if not self.cursor.available():
            return []
        batch = self.cursor.read_batch(limit, copy=copy)
        if copy:
            self.cursor.commit()
        return batch

    def read_block(self, timeout: Optional[float] = 0.0, limit: Optional[int] = None) -> Sequence[bytes]:
        self.cursor.commit()
        if not self.cursor.available():
            return []
        batch = self.cursor.read_block(limit)
        self.cursor.commit()
        return batch


def worker(path: str, fmt: str, passes: int, out_path: str = os.devnull) -> Dict[str, float]:
    """Replay the ring image at path `passes` times (after one warm-up pass, which loads the
    resolvers as a running netbee has them) through cli._show; CPU seconds of the measured passes.
    Output to out_path, with a fixed clock offset unless that is /dev/null, so that two
    checkouts' outputs can be compared byte for byte."""
    from netbee import cli, output
    from netbee.tracer import Tracer

    with open(path, "rb") as f:
        count = int.from_bytes(f.read(8), "little")
        image = f.read()
    reader = _ReplayReader(image)
    res = output.Resolvers()
    if out_path != os.devnull:
        # Interface names from a fixed table: the captured namespaces are going away meanwhile,
        # and a name one process still finds and the next does not is no difference in code.
        from netbee.resolvers.ifnames import IfNames
        res = output.Resolvers(ifnames=IfNames(lister=lambda ns: {i: f"if{i}" for i in range(1, 64)}))
    renderer = output.JsonRenderer(res) if fmt == "json" else output.TableRenderer(res, color=False)
    if out_path != os.devnull:
        renderer.clock.offset = FIXED_CLOCK_OFFSET
    tracer = Tracer()
    tracer._reader = reader        # the read path of a started Tracer, minus the kernel
    flag = cli._StopFlag()
    cpu = 0.0
    with open(out_path, "w", encoding="utf-8") as out:
        for i in range(passes + 1):
            reader.rewind()
            c0 = time.process_time()
            shown = cli._show(tracer, renderer, out, flag, count, reader.size)
            if i:
                cpu += time.process_time() - c0
            if shown != count:
                raise RuntimeError(f"showed {shown} of {count} records")
    return {"events": count * passes, "cpu_s": cpu}


# ----------------------------------------------------------------------------- driver

def _run_worker(tree: str, path: str, fmt: str, passes: int, callgrind: bool = False,
                out: str = os.devnull) -> Dict[str, float]:
    env = dict(os.environ, PYTHONPATH=tree, PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", path, "--format", fmt, "--passes", str(passes),
           "--out", out]
    if callgrind:
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"] + cmd
    p = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=True)
    result = json.loads(p.stdout.strip().splitlines()[-1])
    if callgrind:
        m = re.search(r"Collected : (\d+)", p.stderr)
        if not m:
            raise RuntimeError("no instruction count in valgrind's output:\n" + p.stderr[-2000:])
        result["instructions"] = int(m.group(1))
    return result


def capture_image(packets: int, path: str) -> int:
    from bench import userspace_breakdown
    from bench.lab import Pair
    with Pair() as pair:
        raws, _, _, lost = userspace_breakdown.capture(pair, packets)
    if not raws:
        raise RuntimeError("no records captured")
    with open(path, "wb") as f:
        f.write(len(raws).to_bytes(8, "little") + ring_image(raws))
    return len(raws)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=False, help="the other checkout (e.g. git worktree add /tmp/nb-old REV)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--passes", type=int, default=3, help="replays of all records per process")
    ap.add_argument("--packets", type=int, default=5000)
    ap.add_argument("--format", choices=("json", "table", "both"), default="both")
    ap.add_argument("--records", help="a ring image written by an earlier run (--keep), instead of capturing")
    ap.add_argument("--keep", help="write the captured ring image here")
    ap.add_argument("--callgrind", action="store_true", help="also count instructions per event (valgrind)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=os.devnull, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.format, args.passes, args.out)))
        return 0
    if not args.before:
        ap.error("--before DIR is required")
    from bench import report
    from bench.traffic import OTHER_CPU

    this = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = {"before": os.path.abspath(args.before), "this": this}
    with tempfile.TemporaryDirectory() as tmp:
        path = args.records or args.keep or os.path.join(tmp, "ring.img")
        if not args.records:
            capture_image(args.packets, path)
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
        os.sched_setaffinity(0, {OTHER_CPU})     # the workers inherit it
        fmts = ["json", "table"] if args.format == "both" else [args.format]
        same: Dict[str, str] = {}
        for fmt in fmts:    # the same bytes out of both checkouts, or the speed-up means nothing
            texts = []
            for name, tree in trees.items():
                out = os.path.join(tmp, f"{name}.{fmt}")
                _run_worker(tree, path, fmt, 0, out=out)
                with open(out, "rb") as f:
                    texts.append(f.read())
            same[fmt] = f"identical ({len(texts[0]):,} bytes)" if texts[0] == texts[1] else "DIFFERENT"
        us: Dict[tuple, List[float]] = {(fmt, t): [] for fmt in fmts for t in trees}
        for rnd in range(args.rounds):
            order = list(trees) if rnd % 2 == 0 else list(trees)[::-1]
            for fmt in fmts:
                for name in order:
                    r = _run_worker(trees[name], path, fmt, args.passes)
                    us[(fmt, name)].append(1e6 * r["cpu_s"] / r["events"])
        instr: Dict[tuple, float] = {}
        if args.callgrind:
            for fmt in fmts:
                for name, tree in trees.items():
                    zero = _run_worker(tree, path, fmt, 0, callgrind=True)["instructions"]
                    one = _run_worker(tree, path, fmt, 1, callgrind=True)["instructions"]
                    instr[(fmt, name)] = (one - zero) / n

    report.header("Diagnostic: userspace path per event, two checkouts side by side",
                  ["python3", "-m", "bench.userspace_replay"] + (argv if argv is not None else sys.argv[1:]))
    rows = []
    for fmt in fmts:
        b, t = report.median(us[(fmt, "before")]), report.median(us[(fmt, "this")])
        row = [fmt, same[fmt], f"{b:.2f} ({report.spread(us[(fmt, 'before')])})",
               f"{t:.2f} ({report.spread(us[(fmt, 'this')])})",
               f"{b / t:.2f}x", f"{1e6 / t:,.0f}"]
        if args.callgrind:
            ib, it = instr[(fmt, "before")], instr[(fmt, "this")]
            row += [f"{ib:,.0f}", f"{it:,.0f}", f"{ib / it:.2f}x"]
        rows.append(row)
    headers = ["output", "output of both", "before: CPU us/event (spread)", "this: CPU us/event (spread)", "speed-up",
               "this: events/s on one core"]
    if args.callgrind:
        headers += ["before: instructions/event", "this: instructions/event", "instruction ratio"]
    print(report.table(headers, rows))
    print(f"\n{n:,} captured records, replayed {args.passes} times per process after a warm-up pass; "
          f"{args.rounds} rounds alternating the checkouts (before = {trees['before']}), pinned to CPU "
          f"{OTHER_CPU}; CPU time by time.process_time(); medians.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
