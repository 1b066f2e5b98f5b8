"""Diagnostic for target 1: what the verifier spends on each program, and on which loads.

A first run after a reboot must verify every program; this shows where that time goes.

- Per program of the tracepoint backend (the object's own C filter, no rules; packet bytes read as
  the tracer would): the instructions the verifier processed (bpf_prog_info.verified_insns) and
  the verification time the kernel itself reports (BPF_LOG_STATS), medians over samples.
- Per kind of load, in a tp_btf program of 1 and of 20 loads of one sk_buff field: a u32
  (`len`), a pointer to bytes (`head`) and a pointer to a struct (`dev`). On kernels with the
  trusted-pointer rules (6.5+), the last makes the verifier search the whole kernel BTF by name
  at every such load it walks; the difference over 19 loads is the cost of one.

    python3 -m bench.verifier_cost [--samples N]
"""
from __future__ import annotations

import argparse
import re
import struct
from typing import Dict, List

from bench import report

LOG_STATS = 4   # BPF_LOG_STATS: the summary lines only (a full log would slow the walk down)
PROGRAMS = ("tp_netif_rx", "tp_netif_receive_skb", "tp_net_dev_queue", "tp_net_dev_start_xmit", "nf_entry",
            "nf_exit", "tp_consume_skb", "tp_kfree_skb")


def _verification_us(log: str) -> int:
    m = re.search(r"verification time (\d+) usec", log or "")
    if m is None:
        raise RuntimeError(f"no verification time in the log: {log[-300:]!r}")
    return int(m.group(1))


def programs_once() -> Dict[str, tuple]:
    """name -> (verified insns, verification us) of one load of the tracepoint set."""
    from netbee.loader import features
    from netbee.loader.btf import Btf
    from netbee.loader.collection import Collection
    from netbee.loader.elf import ObjectSpec
    from netbee.tracer import default_object_path

    spec = ObjectSpec.from_path(default_object_path(), programs=PROGRAMS)
    if features.has("direct_packet_reads")[0]:
        spec.set_global("direct_packet_reads", struct.pack("<I", 1))
    with Collection(spec, kernel_btf=Btf.load_kernel(), programs=PROGRAMS, log_level=LOG_STATS) as coll:
        return {n: (p.info().verified_insns, _verification_us(p.log)) for n, p in coll.programs.items()}


def loads_us(field: str, count: int) -> int:
    """Verification time of a tp_btf program that loads skb->field count times."""
    from netbee.loader import features
    from netbee.loader.btf import Btf
    from netbee.loader.programs import Program, resolve_attach_btf_id

    kbtf = Btf.load_kernel()
    off = features._member_offset(kbtf, "sk_buff", field)
    if off is None:
        raise RuntimeError(f"struct sk_buff has no {field} in the kernel BTF")
    btf_id = resolve_attach_btf_id(kbtf, "tp_btf", "netif_receive_skb")
    opcode = 0x61 if field == "len" else 0x79               # ldx u32 / ldx u64
    insns = struct.pack("<BBhi", 0x79, 0x11, 0, 0)          # r1 = the skb (first argument)
    insns += struct.pack("<BBhi", opcode, 0x12, off, 0) * count   # r2 = skb->field
    insns += struct.pack("<BBhi", 0xB7, 0, 0, 0) + struct.pack("<BBhi", 0x95, 0, 0, 0)
    prog = Program("nb_bench_loads", "tp_btf", insns, attach_target="netif_receive_skb", attach_btf_id=btf_id,
                   log_level=LOG_STATS)
    try:
        return _verification_us(prog.log)
    finally:
        prog.close()


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=5)
    args = ap.parse_args(argv)
    runs = [programs_once() for _ in range(args.samples)]
    report.header("Diagnostic: the verifier's time per program and per load",
                  ["python3", "-m", "bench.verifier_cost", "--samples", str(args.samples)])
    rows = []
    for name in runs[0]:
        us = [r[name][1] for r in runs]
        rows.append([name, f"{runs[0][name][0]:,}", f"{report.median(us) / 1000:.1f}", report.spread([u / 1000 for u in us])])
    total = [sum(r[n][1] for n in r) / 1000 for r in runs]
    rows.append(["total", f"{sum(v[0] for v in runs[0].values()):,}", f"{report.median(total):.1f}", report.spread(total)])
    print(report.table(["program", "verified insns", "verification ms (median)", "ms min..max"], rows))
    print()
    rows = []
    for field, what in (("len", "u32"), ("head", "pointer to bytes"), ("dev", "pointer to a struct")):
        one = report.median(loads_us(field, 1) for _ in range(args.samples))
        many = report.median(loads_us(field, 20) for _ in range(args.samples))
        rows.append([f"skb->{field} ({what})", f"{one / 1000:.2f}", f"{many / 1000:.2f}", f"{(many - one) / 19 / 1000:.3f}"])
    print(report.table(["load", "1 load: ms", "20 loads: ms", "ms per load"], rows))
    print(f"\nSamples: {args.samples}; verification time as the kernel reports it (BPF_LOG_STATS). The "
          "programs are the tracepoint backend's with the object's own filter and no rules, packet bytes "
          "read as the tracer reads them.\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
