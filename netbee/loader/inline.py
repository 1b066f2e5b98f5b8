"""Inline a program's last function at its call sites (the generated filter, issue 8).

A BPF-to-BPF call costs a frame set-up and tear-down on every run; for a filter of a few
instructions that is as much as the filter itself. The function must be the program's last one
(where elf.py's linker puts a function whose body replace= swapped) and a leaf that keeps to the
caller-saved registers r0-r5 and its own code: no call, no stack (r10), no r6-r9, no ld_imm64.
Each call becomes the body, its exits jumps to the instruction after it; everything after a call
site moves, and every jump, call and ld_imm64 function address crossing it, every map reference
and every func/line record is moved with it. The function's own copy at the end goes.

Works on PreparedProgram (relocated instructions, records in the kernel's form): pure.
"""
from __future__ import annotations

import struct
from dataclasses import replace
from typing import List, Optional

from netbee.loader import insn as I
from netbee.loader.map_spec import MapReloc
from netbee.loader.prepared import FUNC_INFO_SIZE, LINE_INFO_SIZE, PreparedProgram

_CALLER_SAVED = range(0, 6)


def inlinable(body: bytes) -> Optional[str]:
    """Why body cannot be inlined, or None when it can."""
    n = I.count(body)
    for idx, ins in I.iter_insns(body):
        cls = ins.cls
        if ins.is_ld_imm64 or cls == I.BPF_LD:
            return f"instruction {idx} is a 64-bit or packet load"
        if ins.is_call:
            return f"instruction {idx} is a call"
        if cls in (I.BPF_JMP, I.BPF_JMP32):
            if ins.opcode == I.OP_EXIT:
                continue
            if (ins.opcode & 0xF0) == I.BPF_JA:
                if cls == I.BPF_JMP32:
                    return f"instruction {idx} is a long jump"
                regs: tuple = ()
            else:
                regs = (ins.dst, ins.src) if ins.opcode & I.BPF_X else (ins.dst,)
            if not 0 <= idx + ins.off + 1 < n:
                return f"instruction {idx} jumps out of the function"
        elif cls in (I.BPF_LDX, I.BPF_STX):
            regs = (ins.dst, ins.src)
        elif cls == I.BPF_ST:
            regs = (ins.dst,)
        else:  # ALU, ALU64
            regs = (ins.dst, ins.src) if ins.opcode & I.BPF_X else (ins.dst,)
        bad = [r for r in regs if r not in _CALLER_SAVED]
        if bad:
            return f"instruction {idx} uses r{bad[0]}"
    if not n:
        return "the body is empty"
    return None


def inline_last_function(p: PreparedProgram, function: str) -> PreparedProgram:
    """p with every call of `function` (its last function, at p.replaced_at[function]) replaced
    by the function's body. ValueError when the body is not inlinable (see inlinable())."""
    start = p.replaced_at.get(function)
    if start is None:
        return p
    if start != max(p.replaced_at.values()):
        raise ValueError(f"program {p.name!r}: {function!r} is not its last function")
    insns = p.insns
    n = I.count(insns)
    body = insns[start * 8:]
    why = inlinable(body)
    if why is not None:
        raise ValueError(f"{function!r} cannot be inlined: {why}")
    blen = I.count(body)
    sites = []
    i = 0
    while i < start:
        ins = I.decode(insns, i)
        if ins.is_pseudo_func and i + ins.imm + 1 == start:
            raise ValueError(f"program {p.name!r} takes the address of {function!r}")
        if ins.is_pseudo_call and i + ins.imm + 1 == start:
            sites.append(i)
        i += 2 if ins.is_ld_imm64 else 1
    if not sites:
        raise ValueError(f"program {p.name!r} never calls {function!r}")

    def moved(old: int) -> int:
        """New index of the old instruction `old` (< start; a call site maps to the body's start)."""
        return old + sum(blen - 1 for s in sites if s < old)

    out = bytearray()
    i = 0
    while i < start:
        ins = I.decode(insns, i)
        if i in sites:
            out += _body_at(body)
            i += 1
            continue
        if ins.is_ld_imm64:
            if ins.is_pseudo_func:
                ins.imm = moved(i + ins.imm + 1) - moved(i) - 1
            out += ins.encode() + insns[(i + 1) * 8:(i + 2) * 8]
            i += 2
            continue
        if ins.is_pseudo_call:
            ins.imm = moved(i + ins.imm + 1) - moved(i) - 1
        elif ins.cls in (I.BPF_JMP, I.BPF_JMP32) and not ins.is_call and ins.opcode != I.OP_EXIT:
            if ins.cls == I.BPF_JMP32 and (ins.opcode & 0xF0) == I.BPF_JA:
                ins.imm = moved(i + ins.imm + 1) - moved(i) - 1   # gotol: 32-bit offset in imm
            else:
                off = moved(i + ins.off + 1) - moved(i) - 1
                if not -(1 << 15) <= off < (1 << 15):
                    raise ValueError(f"program {p.name!r}: a jump over the inlined body is too long")
                ins.off = off
        out += ins.encode()
        i += 1
    return replace(p, insns=bytes(out),
                   map_relocs=[MapReloc(moved(r.insn_index), r.map_name, r.src, r.offset) for r in p.map_relocs],
                   func_info=_records(p.func_info, FUNC_INFO_SIZE, start, moved),
                   line_info=_records(p.line_info, LINE_INFO_SIZE, start, moved),
                   poisoned=[(moved(idx), why) for idx, why in p.poisoned],
                   replaced_at={k: v for k, v in p.replaced_at.items() if k != function})


def _body_at(body: bytes) -> bytes:
    """The body with each exit turned into a jump to the instruction after it."""
    out = bytearray(body)
    n = I.count(body)
    for idx, ins in I.iter_insns(body):
        if ins.opcode == I.OP_EXIT:
            I.write(out, idx, I.Insn(I.BPF_JMP | I.BPF_JA, 0, 0, n - 1 - idx, 0))
    return bytes(out)


def _records(blob: bytes, size: int, start: int, moved) -> bytes:
    """func_info/line_info records (insn_off first, in instructions): those of the inlined
    function dropped, the others moved."""
    out: List[bytes] = []
    for k in range(0, len(blob), size):
        (off,) = struct.unpack_from("=I", blob, k)
        if off >= start:
            continue
        out.append(struct.pack("=I", moved(off)) + blob[k + 4:k + size])
    return b"".join(out)
