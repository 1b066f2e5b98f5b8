#!/usr/bin/env python3
"""Measure the user-space hot path: raw nb_event record -> decode_event -> renderer -> /dev/null.

Synthetic records (built with abi.EVENT: TCP, UDP, ICMP echo, a drop) cycle through the loop;
CPU time of this process (time.process_time) is reported, which is robust against other load
on a shared machine. Run: python3 scripts/bench_output.py [--events N] [--table]
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from netbee import abi, output  # noqa: E402
from netbee.decode import decode_event  # noqa: E402
from netbee.resolvers.drop_reasons import DropReasons  # noqa: E402
from netbee.resolvers.ifnames import IfNames  # noqa: E402
from netbee.resolvers.kallsyms import Kallsyms  # noqa: E402


def record(**kw) -> bytes:
    base = {name: (bytes(size) if name in ("smac", "dmac", "saddr", "daddr", "inner_saddr",
                                           "inner_daddr", "comm") else 0)
            for name, _, size in abi.field_layout(abi.EVENT)}
    base.update(kw)
    return abi.EVENT.build(base)


def samples() -> list:
    l23 = dict(flags=abi.F_HAS_L2 | abi.F_HAS_L3 | abi.F_HAS_L4, family=4, ttl=64, ifindex=5,
               netns=4026531840, pid=100, cpu=1, comm=b"iperf3".ljust(16, b"\0"),
               smac=bytes.fromhex("3c22fb000001"), dmac=bytes.fromhex("021122334455"),
               saddr=bytes([10, 201, 1, 1]) + bytes(12), daddr=bytes([10, 201, 1, 2]) + bytes(12),
               ethertype=0x0800, ip_len=1500, skb_len=1514, skb=0xFFFF888000001000,
               ts_ns=123456789)
    return [
        record(hook=2, ip_proto=6, sport=40000, dport=5201, seq=1, ack=2, tcp_flags=0x10,
               window=500, payload_len=1448, **l23),
        record(hook=7, ip_proto=17, sport=5353, dport=5353, udp_len=40, **l23),
        record(hook=8, ip_proto=1, icmp_type=8, icmp_code=0, icmp_id=1, icmp_seq=2, **l23),
        record(hook=15, ip_proto=17, sport=1, dport=7777, udp_len=16, drop_reason=2,
               location=0xFFFFFFFF81000010, **dict(l23, flags=l23["flags"] | abi.F_DROP)),
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--table", action="store_true", help="the table renderer instead of JSON")
    args = ap.parse_args(argv)
    res = output.Resolvers(ifnames=IfNames(lister=lambda ns: {5: "veth-s"}),
                           drops=DropReasons(loader=lambda: {"SKB_DROP_REASON_NO_SOCKET": 2}),
                           kallsyms=Kallsyms(f=io.StringIO("ffffffff81000000 T sk_skb_reason_drop\n")))
    renderer = output.TableRenderer(res) if args.table else output.JsonRenderer(res)
    recs = samples()
    n = args.events
    batch = (recs * (n // len(recs) + 1))[:n]
    render = renderer.render
    with open(os.devnull, "w") as out:
        write = out.write
        t0, c0 = time.perf_counter(), time.process_time()
        for raw in batch:
            write(render(decode_event(raw)) + "\n")
        t1, c1 = time.perf_counter(), time.process_time()
        d0 = time.process_time()
        for raw in batch:
            decode_event(raw)
        d1 = time.process_time()
    cpu = c1 - c0
    kind = "table" if args.table else "json"
    print(f"{kind}: {n} events, {cpu:.3f} s CPU ({t1 - t0:.3f} s wall): {n / cpu:,.0f} events/s "
          f"decode+render; decode alone {n / (d1 - d0):,.0f} events/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
