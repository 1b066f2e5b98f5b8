"""Diagnostic: where netbee's programs spend a packet's time, by source line.

netbee runs on the two benchmark namespaces (tracepoint backend, a fresh load, filter EXPR:
by default one that matches nothing) while udpblast floods them from CPU 0; `perf record -e
cpu-clock` samples CPU 0 meanwhile. Each sample inside a BPF program is mapped to the C line it
was compiled from through the program's jited_line_info (the JIT address where each line's
code starts) and line_info (file and line in the object's BTF, read back from the kernel).

cpu-clock samples (this VM has no hardware PMU) land on the instruction that was to run when
the timer fired: a stall (a cache miss, a mispredicted return) shows on the line after it. Read
the table as "time spent reaching this line". Needs perf (linux-perf).

    python3 -m bench.bpf_profile [--seconds S] [--expr EXPR] [--top N]
"""
from __future__ import annotations

import argparse
import bisect
import collections
import ctypes
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Tuple

from bench import bpfstats, configs, report, traffic, tracers
from bench.lab import Pair
from netbee.loader import syscall as sc

BTF_GET_FD_BY_ID = 19   # not in netbee's Cmd table: netbee itself never opens BTF by id
LINE_INFO = struct.Struct("=IIII")   # struct bpf_line_info


class _BtfInfo(ctypes.Structure):
    _fields_ = [("btf", ctypes.c_uint64), ("btf_size", ctypes.c_uint32), ("id", ctypes.c_uint32),
                ("name", ctypes.c_uint64), ("name_len", ctypes.c_uint32), ("kernel_btf", ctypes.c_uint32)]


def _btf_strings(btf_id: int) -> bytes:
    """The string section of a loaded BTF object."""
    with sc.bpf_fd(BTF_GET_FD_BY_ID, sc.GetIdAttr(start_id=btf_id), what=f"BTF id {btf_id}") as fd:
        size = sc.obj_info(fd.fd, _BtfInfo()).btf_size
        buf = ctypes.create_string_buffer(size)
        sc.obj_info(fd.fd, _BtfInfo(btf=ctypes.addressof(buf), btf_size=size))
    raw = buf.raw
    hdr_len, _type_off, _type_len, str_off, str_len = struct.unpack_from("<IIIII", raw, 4)
    return raw[hdr_len + str_off:hdr_len + str_off + str_len]


def line_map(prog_id: int) -> Tuple[str, List[Tuple[int, str]]]:
    """(program name, [(JIT address where a line's code starts, "file:line source")], sorted)."""
    with sc.prog_fd_by_id(prog_id) as fd:
        info = sc.obj_info(fd.fd, sc.ProgInfo())
        n, rec = info.nr_line_info, info.line_info_rec_size
        lines = ctypes.create_string_buffer(n * rec)
        addrs = (ctypes.c_uint64 * info.nr_jited_line_info)()
        sc.obj_info(fd.fd, sc.ProgInfo(nr_line_info=n, line_info_rec_size=rec, line_info=ctypes.addressof(lines),
                                       nr_jited_line_info=info.nr_jited_line_info, jited_line_info_rec_size=8,
                                       jited_line_info=ctypes.addressof(addrs)))
    strings = _btf_strings(info.btf_id)

    def text(off: int) -> str:
        return strings[off:strings.index(b"\0", off)].decode(errors="replace")

    out = []
    for k in range(min(n, len(addrs))):
        _insn, file_off, line_off, line_col = LINE_INFO.unpack_from(lines.raw, k * rec)
        where = f"{text(file_off).rsplit('/', 1)[-1]}:{line_col >> 10}"
        out.append((addrs[k], f"{where} `{' '.join(text(line_off).split())[:60]}`"))
    return info.name.decode(errors="replace"), sorted(out)


def attribute(perf_data: str, maps: List[Tuple[str, List[Tuple[int, str]]]]) -> Tuple[collections.Counter, collections.Counter, int]:
    """Samples per (program, line) and per program, and all samples of CPU 0."""
    # lines whose code starts at one address (nothing emitted between them) share its samples
    joined: Dict[int, Tuple[str, str]] = {}
    for name, lines in maps:
        for addr, line in lines:
            joined[addr] = (name, f"{joined[addr][1]} + {line}" if addr in joined else line)
    points = sorted((addr, name, line) for addr, (name, line) in joined.items())
    starts = [p[0] for p in points]
    script = subprocess.run(["perf", "script", "-i", perf_data, "-F", "ip"], capture_output=True, text=True,
                            check=True).stdout.split()
    per_line: collections.Counter = collections.Counter()
    per_prog: collections.Counter = collections.Counter()
    for word in script:
        ip = int(word, 16)
        k = bisect.bisect_right(starts, ip) - 1
        if k >= 0 and ip - starts[k] < 4096:
            _addr, name, line = points[k]
            per_line[(name, line)] += 1
            per_prog[name] += 1
    return per_line, per_prog, len(script)


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="perf record length")
    ap.add_argument("--expr", default=configs.NOMATCH_EXPR, help="netbee's filter (default: matches nothing)")
    ap.add_argument("--top", type=int, default=40, help="lines shown")
    args = ap.parse_args(argv)
    with Pair() as pair, tempfile.TemporaryDirectory() as tmp:
        traffic.udp_trial(pair, 0.5)
        nb = ["--backend", "tracepoint", "--netns", pair.tx, "--netns", pair.rx, "--json", "--no-cache", args.expr]
        with tracers.Tracer(configs.pin(tracers.netbee_argv(nb)), stdout_to_null=True) as t:
            t.wait_ready(need="tracing")
            maps = [line_map(pid) for pid in sorted(bpfstats.prog_ids_of(t.pid))]
            flood = threading.Thread(target=traffic.udp_trial, args=(pair, args.seconds + 2.0))
            flood.start()
            time.sleep(1.0)
            data = os.path.join(tmp, "perf.data")
            subprocess.run(["perf", "record", "-q", "-a", "-C", str(traffic.SEND_CPU), "-e", "cpu-clock",
                            "-F", "25000", "-o", data, "--", "sleep", str(args.seconds)],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            flood.join()
            t.interrupt()
        per_line, per_prog, total = attribute(data, maps)
    report.header("Diagnostic: BPF time by source line (perf cpu-clock samples)",
                  ["python3", "-m", "bench.bpf_profile"] + (argv if argv is not None else sys.argv[1:]))
    in_bpf = sum(per_prog.values())
    print(report.table(["program", "samples", "% of CPU 0"],
                       [[p, f"{n:,}", f"{100 * n / max(total, 1):.1f}"] for p, n in per_prog.most_common()]))
    print()
    print(report.table(["program", "line", "samples", "% of the program's"],
                       [[p, line, f"{n:,}", f"{100 * n / max(per_prog[p], 1):.1f}"]
                        for (p, line), n in per_line.most_common(args.top)]))
    print(f"\n{total:,} samples on CPU {traffic.SEND_CPU} in {args.seconds} s, {in_bpf:,} in netbee's programs; "
          f"filter {args.expr!r}, sender unpaced.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
