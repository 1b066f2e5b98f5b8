"""loader/inline.py: the generated filter put in place of its call, on the real object's programs."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from netbee import filter_codegen
from netbee.filter import compile_filter
from netbee.loader import insn as I
from netbee.loader.elf import ObjectSpec
from netbee.loader.inline import inlinable, inline_last_function
from netbee.loader.prepared import PreparedProgram, func_info_records

ROOT = Path(__file__).resolve().parents[2]
NETBEE = str(ROOT / "bpf/prebuilt/netbee.bpf.o")
FN = filter_codegen.FUNCTION


def _prepared(expr: str) -> dict:
    body = filter_codegen.compile_rules(compile_filter(expr))
    spec = ObjectSpec.from_path(NETBEE, replace={FN: body})
    return {n: PreparedProgram(n, p.kind, p.attach_target, "GPL", bytes(p.insns), list(p.map_relocs), 0,
                               func_info_records(p.func_info), p.line_info.blob(), [], dict(p.replaced_at))
            for n, p in spec.programs.items() if FN in p.replaced_at}


def _target(ins: I.Insn, i: int):
    if ins.is_pseudo_call or ins.is_pseudo_func:
        return i + ins.imm + 1
    if ins.cls in (I.BPF_JMP, I.BPF_JMP32) and not ins.is_call and ins.opcode != I.OP_EXIT:
        return i + (ins.imm if ins.cls == I.BPF_JMP32 and ins.opcode & 0xF0 == I.BPF_JA else ins.off) + 1
    return None


def _offsets(blob: bytes, size: int) -> list:
    return [struct.unpack_from("=I", blob, k)[0] for k in range(0, len(blob), size)]


@pytest.mark.parametrize("expr", ["host 10.1.2.3", "udp and (port 53 or portrange 1000-2000) and not net fd00::/8", ""])
def test_every_instruction_keeps_its_meaning(expr):
    progs = _prepared(expr or None)
    assert len(progs) >= 6
    for name, old in progs.items():
        start = old.replaced_at[FN]
        body = old.insns[start * 8:]
        blen = I.count(body)
        sites = [i for i, ins in I.iter_insns(old.insns[:start * 8]) if ins.is_pseudo_call and _target(ins, i) == start]
        assert len(sites) == 1, name
        site = sites[0]
        new = inline_last_function(old, FN)

        def moved(i: int) -> int:
            return i + (blen - 1 if i > site else 0)
        assert I.count(new.insns) == start - 1 + blen and FN not in new.replaced_at
        skip = False
        for i, ins in I.iter_insns(old.insns[:start * 8]):
            if skip:          # the second half of an ld_imm64
                skip = False
                assert new.insns[moved(i) * 8:moved(i) * 8 + 8] == old.insns[i * 8:i * 8 + 8]
                continue
            skip = ins.is_ld_imm64
            if i == site:
                continue
            got = I.decode(new.insns, moved(i))
            assert (got.opcode, got.dst, got.src) == (ins.opcode, ins.dst, ins.src), (name, i)
            t = _target(ins, i)
            if t is None:
                assert (got.off, got.imm) == (ins.off, ins.imm), (name, i)
            else:
                assert _target(got, moved(i)) == moved(t), (name, i)
        # the call is the body now, its exits jumps to the instruction after it
        for k, ins in I.iter_insns(body):
            got = I.decode(new.insns, site + k)
            if ins.opcode == I.OP_EXIT:
                assert got.opcode == I.BPF_JMP | I.BPF_JA and site + k + got.off + 1 == site + blen
            else:
                assert got == ins
        assert [(r.insn_index, r.map_name, r.src) for r in new.map_relocs] == \
            [(moved(r.insn_index), r.map_name, r.src) for r in old.map_relocs]
        assert _offsets(new.func_info, 8) == [moved(o) for o in _offsets(old.func_info, 8) if o < start]
        assert _offsets(new.line_info, 16) == [moved(o) for o in _offsets(old.line_info, 16) if o < start]
        lines = _offsets(new.line_info, 16)
        assert lines == sorted(lines)


def test_what_cannot_be_inlined_is_refused():
    ok = I.mov64_imm(0, 1) + I.exit_insn()
    assert inlinable(ok) is None
    assert "r6" in inlinable(I.mov64_imm(6, 1) + ok)
    assert "r10" in inlinable(I.ldx_mem(I.BPF_W, 0, 10, -8) + ok)
    assert "call" in inlinable(I.call_helper(5) + ok)
    assert "64-bit" in inlinable(I.ld_imm64(0, 1) + ok)
    assert "jumps out" in inlinable(I.ja(5) + ok)
    assert "empty" in inlinable(b"")
    progs = _prepared("host 10.1.2.3")
    p = next(iter(progs.values()))
    start = p.replaced_at[FN]
    bad = PreparedProgram(**{**p.__dict__, "insns": p.insns[:start * 8] + I.mov64_imm(7, 0) + I.exit_insn()})
    with pytest.raises(ValueError, match="r7"):
        inline_last_function(bad, FN)
    assert inline_last_function(p, "no_such_function") is p
