"""Startup budgets of the kernel BTF index and CO-RE (issue 2: 0.15 s; issue 8: startup).

Every budget is this process's CPU time (time.process_time), best of a few tries: on a
shared 2-core machine wall time mostly measures the other tenants.  Each bound sits at
2-5x what the current code needs here and well below what the code it replaced needed,
so a return to that behaviour fails (figures in the comments, measured on this machine).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from netbee.loader import btf as btf_module
from netbee.loader import core
from netbee.loader.btf import Btf, BtfKind, Struct
from netbee.loader.elf import ObjectSpec

ROOT = Path(__file__).resolve().parents[2]
VMLINUX = "/sys/kernel/btf/vmlinux"
PREBUILT = ROOT / "bpf/prebuilt/netbee.bpf.o"

# what the tracer and CO-RE look up at start, plus names that are not there
NAMES = ["sk_buff", "net_device", "iphdr", "ipv6hdr", "tcphdr", "udphdr", "icmphdr", "sock",
         "sock_common", "nf_hook_state", "skb_drop_reason", "task_struct", "net", "ns_common",
         "btf_trace_netif_receive_skb", "btf_trace_net_dev_queue", "btf_trace_kfree_skb",
         "btf_trace_consume_skb", "btf_trace_net_dev_start_xmit", "btf_trace_netif_rx",
         "trace_event_raw_kfree_skb", "ip_rcv", "ip_rcv_core", "ip_local_deliver", "ip_forward",
         "ip_output", "__dev_queue_xmit", "netif_rx", "tcp_v4_rcv", "udp_rcv", "icmp_rcv",
         "nf_hook_slow", "__tcp_transmit_skb", "sk_skb_reason_drop", "kfree_skb_reason",
         "bpf_nf_ctx", "in6_addr", "sk_buff___old", "no_such_type_a", "no_such_type_b"]


def _vmlinux() -> None:
    # a kernel without /sys/kernel/btf/vmlinux cannot run NetBee's CO-RE: fail, never skip
    assert os.path.exists(VMLINUX), f"{VMLINUX} missing: this test needs a kernel with BTF"


def _fresh_kernel_btf() -> Btf:
    btf_module._PARSED.clear()     # a real parse, not a Btf sharing an earlier one
    return Btf.load_kernel()


def _best(fn, tries: int = 3) -> float:
    best = None
    for _ in range(tries):
        t0 = time.process_time()
        fn()
        dt = time.process_time() - t0
        best = dt if best is None else min(best, dt)
    assert best is not None
    return best


def test_load_and_first_find_within_budget():
    """issue 2: read + parse vmlinux BTF + one find <= 0.15 s (here ~0.04 s)."""
    _vmlinux()
    dt = _best(lambda: _fresh_kernel_btf().find("sk_buff", BtfKind.STRUCT), tries=5)
    assert dt <= 0.15, f"load + first find took {dt:.3f} s of CPU"


def test_later_finds_are_cheap():
    """The first find and 40 new names, one at a time, cost ~0.09 s here: a string-table search
    each (~1 ms), the name column's searches up to its budget, then the sort of the index
    (netbee/loader/btf_index.py). Announced together (prefetch, as the plan and CO-RE do) the
    column is passed once: ~0.08 s, the string searches being most of it. Repeated names are
    memo hits (~0.4 us each)."""
    _vmlinux()
    state = {}

    def new_names(announce: bool):
        btf = _fresh_kernel_btf()
        t0 = time.process_time()
        if announce:
            btf.prefetch(["int"] + NAMES)
        btf.find("int")
        for n in NAMES:
            btf.find(n)
        key = "announced" if announce else "one by one"
        state[key] = min(state.get(key, 1e9), time.process_time() - t0)
        state["btf"] = btf

    for _ in range(3):
        new_names(False)
        new_names(True)
    for key in ("one by one", "announced"):
        assert state[key] <= 0.15, f"{key}: {len(NAMES) + 1} first-time finds took {state[key]:.3f} s of CPU"
    btf = state["btf"]
    assert btf._idx()._packed is None, "names announced together sorted the index"
    dt = _best(lambda: [btf.find(n) for _ in range(50) for n in NAMES])
    assert dt <= 0.03, f"{50 * len(NAMES)} repeated finds took {dt:.3f} s of CPU"


def test_load_kernel_shares_one_parse(tmp_path):
    """features.py and the tracer both load the kernel BTF: the second load costs a stat
    (~0.1 ms; a parse is ~20 ms), and each Btf still keeps its own edits."""
    _vmlinux()
    first = _fresh_kernel_btf()
    (sid,) = first.find("sk_buff", BtfKind.STRUCT)
    dt = _best(Btf.load_kernel, tries=5)
    assert dt <= 0.005, f"a second load_kernel took {dt:.4f} s of CPU"
    second = Btf.load_kernel()
    assert second is not first and second._words is first._words
    second.replace(sid, Struct("sk_buff", 1, []))
    second.add_type(Struct("netbee_only", 4, []))
    assert first.type(sid).size > 1 and first.find("netbee_only") == []
    assert second.find("netbee_only") == [len(second) - 1]
    assert Btf.load_kernel().type(sid).size == first.type(sid).size
    # a file that changed is parsed again
    raw = Path(VMLINUX).read_bytes()
    path = tmp_path / "vmlinux.btf"
    path.write_bytes(raw)
    a = Btf.load_kernel(str(path))
    path.write_bytes(raw[:-1] + b"\0")
    os.utime(path, ns=(1, 1))
    b = Btf.load_kernel(str(path))
    assert b._words is not a._words


def test_relocating_the_prebuilt_object_is_fast():
    """CO-RE of all 52 programs (844 relocations) with the collection's shared cache, on a
    fresh kernel BTF after its first find: ~0.02 s here (0.23 s before the candidate search
    by prefix and the memo of repeated relocations)."""
    _vmlinux()
    spec = ObjectSpec.from_path(str(PREBUILT))
    nrelos = sum(len(p.core_relos) for p in spec.programs.values())
    assert len(spec.programs) >= 40 and nrelos >= 500
    best = None
    for _ in range(3):
        kbtf = _fresh_kernel_btf()
        kbtf.find("int")
        t0 = time.process_time()
        cache: dict = {}
        n = sum(len(core.relocate(name, p.core_relos, spec.btf, kbtf, cache))
                for name, p in spec.programs.items())
        dt = time.process_time() - t0
        best = dt if best is None else min(best, dt)
    assert n == nrelos
    assert best <= 0.08, f"relocating {n} CO-RE relocations took {best:.3f} s of CPU"


def test_relocation_memo_changes_nothing(monkeypatch):
    """The memo returns exactly what recomputing every relocation returns, pruning included."""
    _vmlinux()
    spec = ObjectSpec.from_path(str(PREBUILT))
    kbtf = Btf.load_kernel()

    def run():
        cache: dict = {}
        out = {name: core.relocate(name, p.core_relos, spec.btf, kbtf, cache)
               for name, p in spec.programs.items()}
        return out, {k: v for k, v in cache.items() if isinstance(k, int)}

    memoized, cache_memo = run()
    monkeypatch.setattr(core, "_relocate_memo", core._relocate_one)
    plain, cache_plain = run()
    assert memoized == plain
    assert cache_memo == cache_plain


def test_object_parse_within_budget():
    """The prebuilt object (52 programs, 25,879 line_info records) parses in ~0.035 s of CPU
    here (~0.055 s when every program copied its records)."""
    ObjectSpec.from_path(str(PREBUILT))            # pyelftools imported outside the timing
    dt = _best(lambda: ObjectSpec.from_path(str(PREBUILT)))
    assert dt <= 0.1, f"parsing {PREBUILT.name} took {dt:.3f} s of CPU"


def test_object_parse_and_load_blobs_decode_no_line_info_record(monkeypatch):
    """line_info stays raw (LineInfos) from parse to the kernel blob: no LineInfo object and no
    string look-up unless a record is read. Counted, so the guard cannot flap with the load."""
    from netbee.loader import btf_ext
    from netbee.loader.programs import line_info_records

    made = [0]

    class Counted(btf_ext.LineInfo):
        def __init__(self, *a, **kw) -> None:
            made[0] += 1
            super().__init__(*a, **kw)

    monkeypatch.setattr(btf_ext, "LineInfo", Counted)
    spec = ObjectSpec.from_path(str(PREBUILT))
    in_ext = sum(len(v) for v in spec.btf_ext.line_info.values())
    in_progs = sum(len(p.line_info) for p in spec.programs.values())
    assert in_ext > 10000 and in_progs >= in_ext
    blobs = {n: line_info_records(p.line_info, None) for n, p in spec.programs.items()}
    assert made[0] == 0, f"{made[0]} line_info records decoded by parse + blob building"
    for n, p in spec.programs.items():
        assert len(blobs[n]) == 16 * len(p.line_info)
        assert p.line_info[0].insn_off == 0          # reading a record decodes it, on demand
    assert made[0] == len(spec.programs)
