"""Splicing a program's last function into the places that call it (pure: no kernel).

A BPF-to-BPF call is dear where return instructions are: with the kernel's SRSO "Safe RET"
mitigation (AMD Zen) every return, the JIT's included, goes through a thunk that the CPU
mispredicts on purpose. On such a machine the call to a generated filter cost ~30 ns per hook
run, more than the filter itself (docs/performance.md, session 7). A replaced body (elf.py's
replace=, PreparedProgram.with_body) is code of our own that sits last in the program, so it
can be copied into each call site instead, and the function dropped.

Only a leaf that needs no frame of its own can be spliced: no calls, no ld_imm64 (a map or
function reference would need relocating), no stack (r10), registers r0-r5 only. After a call
r1-r5 hold nothing the caller may read (the verifier sees to that), so a body that clobbers
them does what the call did; r6-r9 it must leave alone, as a callee would have restored them.
Its exits become jumps to just after the spliced copy, with the result in r0 as before.
"""
from __future__ import annotations

import bisect
import struct
from array import array
from typing import Callable, List, Optional, Sequence, Tuple

from netbee.loader import insn as I
from netbee.loader.record import Record

FUNC_INFO = struct.Struct("=II")       # struct bpf_func_info: insn_off (in instructions), type_id
LINE_INFO = struct.Struct("=IIII")     # struct bpf_line_info: insn_off (in instructions), ...
_CALLEE_SCRATCH = range(0, 6)         # r0-r5


def _jump_uses_imm(ins: I.Insn) -> bool:
    """gotol: BPF_JMP32 | BPF_JA carries its offset in imm."""
    return ins.cls == I.BPF_JMP32 and (ins.opcode & 0xF0) == I.BPF_JA


def _registers(ins: I.Insn) -> Tuple[int, ...]:
    """The registers an instruction of a spliceable body reads or writes."""
    cls, op = ins.cls, ins.opcode & 0xF0
    uses_src = bool(ins.opcode & I.BPF_X)
    if cls in (I.BPF_ALU, I.BPF_ALU64):
        return (ins.dst, ins.src) if uses_src else (ins.dst,)
    if cls in (I.BPF_JMP, I.BPF_JMP32):
        if op in (I.BPF_JA, I.BPF_EXIT):
            return ()
        return (ins.dst, ins.src) if uses_src else (ins.dst,)
    if cls == I.BPF_ST:
        return (ins.dst,)
    return (ins.dst, ins.src)   # LDX, STX


def splice_blockers(body: bytes) -> Optional[str]:
    """Why body cannot be spliced into its callers, or None when it can."""
    n = I.count(body)
    if not n or len(body) % I.INSN_SIZE:
        return "not a whole number of instructions"
    for i, ins in I.iter_insns(body):
        cls, op = ins.cls, ins.opcode & 0xF0
        if cls == I.BPF_LD:
            return f"instruction {i} is an ld_imm64 or a packet load"
        if cls in (I.BPF_JMP, I.BPF_JMP32):
            if op == I.BPF_CALL:
                return f"instruction {i} is a call"
            if op != I.BPF_EXIT:
                off = ins.imm if _jump_uses_imm(ins) else ins.off
                if not 0 <= i + off + 1 < n:
                    return f"instruction {i} jumps outside the body"
        if any(r not in _CALLEE_SCRATCH for r in _registers(ins)):
            return f"instruction {i} uses a register beyond r5 (the stack or the caller's)"
    return None


class Spliced(Record):
    """A program after splice_last_function: its instructions and records, and old -> new index."""
    __slots__ = ("insns", "func_info", "line_info", "new_index", "sites")

    def __init__(self, insns: bytes,
                 func_info: bytes, line_info: bytes, new_index: Callable[[int], int], sites: List[int]) -> None:
        self.insns = insns
        self.func_info = func_info
        self.line_info = line_info
        self.new_index = new_index
        self.sites = sites


# opcodes whose instruction may name another by its place: jumps, calls, ld_imm64 (a function's
# address); the second half of an ld_imm64 has opcode 0, which is none of them
_REFERRING = frozenset({op for op in range(256) if op & 0x07 in (I.BPF_JMP, I.BPF_JMP32)
                        and op & 0xF0 != I.BPF_EXIT} | {I.OP_LD_IMM64})


def splice_last_function(insns: bytes, at: int, func_info: bytes = b"", line_info: bytes = b"") -> Spliced:
    """Copy the function that starts at instruction `at` and runs to the end of the program into
    every call of it, and drop it. Jumps, calls and function references around the copies are
    moved, as are the func/line records (kernel form, offsets in instructions); the call's line
    record now starts the copy. ValueError when the body cannot be spliced (splice_blockers) or
    the program refers to the function other than by calling it."""
    total = I.count(insns)
    if not 0 < at < total:
        raise ValueError(f"function start {at} is not inside the program (0..{total})")
    body = bytes(insns[at * I.INSN_SIZE:])
    why = splice_blockers(body)
    if why:
        raise ValueError(f"the function cannot be spliced: {why}")
    k = I.count(body)
    code = memoryview(insns)[:at * I.INSN_SIZE]
    # only jumps, calls and ld_imm64 refer to other instructions: look at nothing else
    refs = [i for i, op in enumerate(code[0::I.INSN_SIZE]) if op in _REFERRING]
    sites: List[int] = []
    moves: List[Tuple[int, I.Insn, int]] = []   # (index, instruction, target) to re-aim
    for i in refs:
        ins = I.decode(code, i)
        if ins.opcode == I.OP_LD_IMM64:
            if not ins.is_pseudo_func:
                continue
            target = i + ins.imm + 1
            if target == at:
                raise ValueError(f"instruction {i} takes the function's address: it cannot go")
        elif ins.is_call:
            if ins.src != I.BPF_PSEUDO_CALL:
                continue            # a helper or kfunc: by number, not by place
            target = i + ins.imm + 1
            if target == at:
                sites.append(i)
                continue
        else:
            target = i + (ins.imm if _jump_uses_imm(ins) else ins.off) + 1
            if target >= at:
                raise ValueError(f"instruction {i} jumps into the function")
        moves.append((i, ins, target))

    def new_index(old: int) -> int:
        # every call site before `old` grew by k - 1 instructions
        return old + (k - 1) * bisect.bisect_left(sites, old)

    copy = bytearray(body)
    for j, b in I.iter_insns(body):
        if b.opcode == I.OP_EXIT:
            I.write(copy, j, I.Insn(I.BPF_JMP | I.BPF_JA, 0, 0, k - j - 1, 0))
    out = bytearray()
    start = 0
    for site in sites:
        out += code[start * I.INSN_SIZE:site * I.INSN_SIZE]
        out += copy
        start = site + 1
    out += code[start * I.INSN_SIZE:]
    for i, ins, target in moves:
        here, there = new_index(i), new_index(target)
        if there - here == target - i:
            continue   # no copy between the two: the offset stands (most of them)
        rel = there - here - 1
        if ins.opcode == I.OP_LD_IMM64 or ins.is_call or _jump_uses_imm(ins):
            I.set_imm(out, here, rel)
        elif not -0x8000 <= rel <= 0x7FFF:
            raise ValueError(f"instruction {i}: the jump no longer fits 16 bits")
        else:
            I.set_off(out, here, rel)
    return Spliced(bytes(out), _moved(func_info, FUNC_INFO, at, sites, k - 1),
                   _moved(line_info, LINE_INFO, at, sites, k - 1), new_index, sites)


def _moved(records: bytes, layout: struct.Struct, at: int, sites: List[int], grow: int) -> bytes:
    """Records (insn_off first; ascending, as the kernel requires) of the code before `at`, at
    their new offsets: those after the n-th call site move by n * grow instructions."""
    words = array("I", records)   # insn_off is the first of each record's u32 words
    step = layout.size // 4
    offs = words[0::step]
    keep = bisect.bisect_left(offs, at)
    del words[keep * step:]
    for n, site in enumerate(sites, 1):
        first = bisect.bisect_right(offs, site, 0, keep)
        nxt = bisect.bisect_right(offs, sites[n], 0, keep) if n < len(sites) else keep
        if first < nxt:
            words[first * step:nxt * step:step] = array("I", [o + n * grow for o in offs[first:nxt]])
    return words.tobytes()


def moved_indices(pairs: Sequence[Tuple[int, str]], new_index: Callable[[int], int]) -> List[Tuple[int, str]]:
    """(instruction index, note) pairs at their new indices."""
    return [(new_index(i), why) for i, why in pairs]
