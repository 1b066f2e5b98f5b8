"""Kernel function calls (extern ... __ksym): found in the ELF, resolved per kernel, their BTF
sanitized for the kernel. Pure: the kernel's BTF is built here."""
from __future__ import annotations

from pathlib import Path

import pytest

from netbee.loader import insn as I
from netbee.loader import kfunc
from netbee.loader.btf import FEATURES, Btf, BtfKind, sanitize
from netbee.loader.btf_types import Datasec, Func, FuncProto, Int, Param, Ptr, Typedef, Var, VarSecInfo
from netbee.loader.elf import ObjectSpec
from netbee.loader.errors import ObjectFileError

ROOT = Path(__file__).resolve().parents[2]
KFUNC = ROOT / "tests/bpf/kfunc.bpf.o"
PREBUILT = ROOT / "bpf/prebuilt/netbee.bpf.o"


def _kernel_btf(*funcs: str) -> Btf:
    b = Btf()
    proto = b.add_type(FuncProto(0, []))
    for name in funcs:
        b.add_type(Func(name, proto, 1))
    return b


def test_object_records_each_kfunc_call():
    spec = ObjectSpec.from_path(str(KFUNC))
    calls = {n: p.kfunc_calls for n, p in spec.programs.items()}
    assert {n: [c.name for c in cs] for n, cs in calls.items()} == {
        "cast_skb": ["bpf_rdonly_cast"], "calls_missing": ["nb_no_such_kfunc"]}
    for name, cs in calls.items():
        ins = I.decode(spec.programs[name].insns, cs[0].insn_index)
        assert (ins.opcode, ins.src, ins.imm) == (I.OP_CALL, I.BPF_PSEUDO_KFUNC_CALL, 0)


def test_prebuilt_casts_every_trusted_argument():
    """The tracepoint and netfilter programs read the skb's pointer fields (and the hook state's)
    through bpf_rdonly_cast once, at their entry (why: the comment above nb_untrusted in
    netbee.bpf.c); tp_consume_skb and nf_exit read no field at all."""
    spec = ObjectSpec.from_path(str(PREBUILT))
    casts = {n: len(p.kfunc_calls) for n, p in spec.programs.items()
             if p.kind in ("tp_btf", "netfilter") and p.kfunc_calls}
    assert casts == {"tp_netif_receive_skb": 1, "tp_netif_rx": 1, "tp_net_dev_queue": 1,
                     "tp_net_dev_start_xmit": 1, "tp_kfree_skb": 1, "nf_entry": 2}
    for p in spec.programs.values():
        assert all(c.name == "bpf_rdonly_cast" for c in p.kfunc_calls)


def test_call_to_a_function_defined_nowhere_is_refused():
    with pytest.raises(ObjectFileError, match=r"calls_undefined.*'nb_defined_nowhere'.*extern \.\.\. __ksym"):
        ObjectSpec.from_path(str(ROOT / "tests/bpf/elf_extern.bpf.o"), programs=["calls_undefined"])


def test_resolve_writes_the_kernels_btf_id():
    spec = ObjectSpec.from_path(str(KFUNC), programs=["cast_skb"])
    p = spec.programs["cast_skb"]
    kbtf = _kernel_btf("bpf_obj_new", "bpf_rdonly_cast")
    insns = bytearray(p.insns)
    kfunc.resolve(p.name, insns, p.kfunc_calls, kbtf)
    ins = I.decode(insns, p.kfunc_calls[0].insn_index)
    assert (ins.opcode, ins.src, ins.imm, ins.off) == (I.OP_CALL, I.BPF_PSEUDO_KFUNC_CALL,
                                                       kbtf.find("bpf_rdonly_cast", BtfKind.FUNC)[0], 0)
    changed = [i for i in range(p.insn_count) if insns[i * 8:i * 8 + 8] != p.insns[i * 8:i * 8 + 8]]
    assert changed == [p.kfunc_calls[0].insn_index]


def test_pass_through_kfunc_missing_becomes_its_move():
    spec = ObjectSpec.from_path(str(KFUNC), programs=["cast_skb"])
    p = spec.programs["cast_skb"]
    for kbtf in (_kernel_btf("bpf_obj_new"), None):
        insns = bytearray(p.insns)
        kfunc.resolve(p.name, insns, p.kfunc_calls, kbtf)
        ins = I.decode(insns, p.kfunc_calls[0].insn_index)
        assert (ins.opcode, ins.dst, ins.src, ins.off, ins.imm) == (I.BPF_ALU64 | I.BPF_MOV | I.BPF_X, 0, 1, 0, 0)


def test_missing_kfunc_is_named():
    spec = ObjectSpec.from_path(str(KFUNC), programs=["calls_missing"])
    p = spec.programs["calls_missing"]
    with pytest.raises(ObjectFileError, match=r"'calls_missing' calls kernel function 'nb_no_such_kfunc', "
                                              r"which this kernel does not have"):
        kfunc.resolve(p.name, bytearray(p.insns), p.kfunc_calls, _kernel_btf("bpf_rdonly_cast"))
    with pytest.raises(ObjectFileError, match="needs the kernel's BTF"):
        kfunc.resolve(p.name, bytearray(p.insns), p.kfunc_calls, None)


def test_resolve_checks_the_recorded_instruction():
    spec = ObjectSpec.from_path(str(KFUNC), programs=["cast_skb"])
    p = spec.programs["cast_skb"]
    moved = [kfunc.KfuncCall(p.kfunc_calls[0].insn_index - 1, "bpf_rdonly_cast")]
    with pytest.raises(ObjectFileError, match="is not the kfunc call"):
        kfunc.resolve(p.name, bytearray(p.insns), moved, _kernel_btf("bpf_rdonly_cast"))


def _with_ksyms() -> Btf:
    b = Btf()
    i = b.add_type(Int("unsigned int", 4, 0, 0, 32))
    ptr = b.add_type(Ptr(0))
    proto = b.add_type(FuncProto(ptr, [Param("", ptr), Param("", i)]))   # as clang writes a declaration
    f1 = b.add_type(Func("bpf_rdonly_cast", proto, 2))
    f2 = b.add_type(Func("other_kfunc", proto, 2))
    b.add_type(Datasec(".ksyms", 0, [VarSecInfo(f1, 0, 0), VarSecInfo(f2, 0, 0)]))
    return b


def test_sanitize_ksyms_for_the_kernel():
    b = _with_ksyms()
    out = sanitize(b, FEATURES)
    assert out.type(4) == Typedef("bpf_rdonly_cast", 3) and out.type(5) == Typedef("other_kfunc", 3)
    int_id, var_id = len(b), len(b) + 1
    assert out.type(int_id) == Int("int", 4, 1, 0, 32)
    assert out.type(var_id) == Var("dummy_ksym", int_id, 1)
    assert out.type(6) == Datasec(".ksyms", 8, [VarSecInfo(var_id, 0, 4), VarSecInfo(var_id, 4, 4)])
    Btf.parse(out.to_bytes())
    assert b.type(4) == Func("bpf_rdonly_cast", 3, 2)          # the input is untouched


def test_sanitize_ksyms_without_datasec_support():
    b = _with_ksyms()
    out = sanitize(b, FEATURES - {"datasec"})
    ds = out.type(6)
    assert ds.kind == BtfKind.STRUCT and ds.size == 8
    assert [(m.type, m.bit_offset) for m in ds.members] == [(len(b), 0), (len(b), 32)]
    assert out.type(len(b)) == Int("int", 4, 1, 0, 32) and len(out) == len(b) + 1
