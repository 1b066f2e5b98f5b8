"""Diagnostic for target 4: where netbee's userspace time per event goes.

Real records are captured from a live trace (netbee.tracer in this process,
paced UDP between the benchmark namespaces), then each stage of the command's
hot path is timed alone over them: decode_event, JsonRenderer.render and
TableRenderer.render (with the same Resolvers the command builds), and the
whole live read path (Tracer.events: ring buffer read + decode) as measured
while capturing.

    python3 -m bench.userspace_breakdown [--packets N]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import List, Optional

from bench import build, report
from bench.lab import Pair
from bench.traffic import OTHER_CPU, SEND_CPU, UDP_PORT


def capture(pair: Pair, packets: int) -> tuple:
    """Raw records of a live trace, and the CPU time Tracer.events() spent yielding them."""
    import netbee.decode as decode
    from netbee.tracer import TraceOptions, Tracer

    raws: List[bytes] = []
    real = decode.decode_event

    def keep(buf):  # what Tracer.events() calls for each record
        raws.append(bytes(buf))
        return real(buf)

    with Tracer(TraceOptions(backend="tracepoint", netns=[pair.tx, pair.rx],
                             ringbuf_bytes=256 << 20)) as tracer:
        tracer.start()
        # Traffic first, all of it queued in the 256 MiB ring buffer, then one timed drain.
        subprocess.run(pair.cmd(pair.tx, [str(build.udpblast()), "send", pair.rx_ip, str(UDP_PORT),
                                          str(packets / 5000 + 0.01), "5000"], SEND_CPU),
                       stdout=subprocess.DEVNULL, check=True)
        decode.decode_event = keep
        try:
            c0 = time.process_time()
            n = sum(1 for _ in tracer.events(timeout=0.2))
            live_cpu = time.process_time() - c0
        finally:
            decode.decode_event = real
        lost = tracer.counters().lost
    return raws, n, live_cpu, lost


def _per_event_us(fn, items: list) -> float:
    c0 = time.process_time()
    for x in items:
        fn(x)
    return 1e6 * (time.process_time() - c0) / max(len(items), 1)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=5000)
    args = ap.parse_args(argv)
    os.sched_setaffinity(0, {OTHER_CPU})
    from netbee import output
    from netbee.decode import decode_event

    with Pair() as pair:
        raws, n, live_cpu, lost = capture(pair, args.packets)
    if not raws:
        raise RuntimeError("no records captured")
    events = [decode_event(r) for r in raws]
    res = output.Resolvers()
    json_r, table_r = output.JsonRenderer(res), output.TableRenderer(res, color=False)
    for ev in events[:200]:  # warm the resolvers' caches, as a running netbee has them
        json_r.render(ev)
        table_r.render(ev)
    stages = [
        ("live: Tracer.events() (ring buffer read + decode), while capturing", 1e6 * live_cpu / max(n, 1)),
        ("decode_event", _per_event_us(decode_event, raws)),
        ("JsonRenderer.render", _per_event_us(json_r.render, events)),
        ("TableRenderer.render", _per_event_us(table_r.render, events)),
    ]
    try:    # the command's path since 2026-12-03: lines straight from raw records, in batches
        from netbee.render_records import JsonRecords, TableRecords
    except ImportError:
        pass
    else:
        batches = [raws[i:i + 1024] for i in range(0, len(raws), 1024)]
        for name, lines in (("JsonRecords.render (raw records)", JsonRecords(json_r)),
                            ("TableRecords.render (raw records)", TableRecords(table_r))):
            lines.render(raws[:200])
            stages.append((name, _per_event_us(lines.render, batches) * len(batches) / len(raws)))
    report.header("Diagnostic: userspace time per event by stage", ["python3", "-m", "bench.userspace_breakdown"]
                  + (argv if argv is not None else sys.argv[1:]))
    print(report.table(["stage", "CPU us per event", "events/s on one core"],
                       [[s, f"{us:.2f}", f"{1e6 / us:,.0f}" if us else "-"] for s, us in stages]))
    print(f"\n{len(raws):,} records captured ({n:,} read live, {lost} lost), CPU time by time.process_time() "
          f"on CPU {OTHER_CPU}.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
