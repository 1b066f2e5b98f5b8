"""BPF instructions: the 8-byte encoding, ld_imm64 pairs, and in-place edits of a bytearray.

Layout (little-endian host, as for every BPF object we load):
  u8 opcode | u8 dst:4 (low) src:4 (high) | s16 off | s32 imm
"""
from __future__ import annotations

import struct
from typing import Iterator, Tuple

from netbee.loader.record import Record

INSN_SIZE = 8

# instruction classes (opcode & 0x07)
BPF_LD = 0x00
BPF_LDX = 0x01
BPF_ST = 0x02
BPF_STX = 0x03
BPF_ALU = 0x04
BPF_JMP = 0x05
BPF_JMP32 = 0x06
BPF_ALU64 = 0x07

# size (opcode & 0x18) for loads/stores
BPF_W = 0x00
BPF_H = 0x08
BPF_B = 0x10
BPF_DW = 0x18
SIZE_BYTES = {BPF_W: 4, BPF_H: 2, BPF_B: 1, BPF_DW: 8}

# mode (opcode & 0xe0)
BPF_IMM = 0x00
BPF_ABS = 0x20
BPF_IND = 0x40
BPF_MEM = 0x60
BPF_MEMSX = 0x80
BPF_ATOMIC = 0xC0

# source (opcode & 0x08) for ALU/JMP
BPF_K = 0x00
BPF_X = 0x08

# ALU/JMP operation (opcode & 0xf0)
BPF_MOV = 0xB0
BPF_ADD = 0x00
BPF_AND = 0x50
BPF_CALL = 0x80
BPF_EXIT = 0x90
BPF_JA = 0x00
BPF_JEQ = 0x10
BPF_JGT = 0x20
BPF_JGE = 0x30
BPF_JNE = 0x50
BPF_JLT = 0xA0
BPF_JLE = 0xB0

OP_LD_IMM64 = BPF_LD | BPF_IMM | BPF_DW     # 0x18, two slots
OP_CALL = BPF_JMP | BPF_CALL                # 0x85
OP_EXIT = BPF_JMP | BPF_EXIT                # 0x95

# src_reg of ld_imm64
BPF_PSEUDO_MAP_FD = 1
BPF_PSEUDO_MAP_VALUE = 2
BPF_PSEUDO_BTF_ID = 3
BPF_PSEUDO_FUNC = 4
BPF_PSEUDO_MAP_IDX = 5
BPF_PSEUDO_MAP_IDX_VALUE = 6

# src_reg of call
BPF_PSEUDO_CALL = 1
BPF_PSEUDO_KFUNC_CALL = 2

_FMT = struct.Struct("<BBhi")


class Insn(Record):
    __slots__ = ("opcode", "dst", "src", "off", "imm")

    def __init__(self, opcode: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> None:
        self.opcode = opcode
        self.dst = dst
        self.src = src
        self.off = off
        self.imm = imm

    @property
    def cls(self) -> int:
        return self.opcode & 0x07

    @property
    def is_ld_imm64(self) -> bool:
        return self.opcode == OP_LD_IMM64

    @property
    def is_call(self) -> bool:
        return self.opcode == OP_CALL

    @property
    def is_pseudo_call(self) -> bool:
        return self.opcode == OP_CALL and self.src == BPF_PSEUDO_CALL

    @property
    def is_pseudo_func(self) -> bool:
        return self.opcode == OP_LD_IMM64 and self.src == BPF_PSEUDO_FUNC

    def encode(self) -> bytes:
        return _FMT.pack(self.opcode, (self.src << 4) | (self.dst & 0xF), self.off, _s32(self.imm))


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def count(buf) -> int:
    return len(buf) // INSN_SIZE


def decode(buf, index: int) -> Insn:
    """The instruction at slot `index`."""
    op, regs, off, imm = _FMT.unpack_from(buf, index * INSN_SIZE)
    return Insn(op, regs & 0xF, regs >> 4, off, imm)


def write(buf: bytearray, index: int, insn: Insn) -> None:
    _FMT.pack_into(buf, index * INSN_SIZE, insn.opcode, (insn.src << 4) | (insn.dst & 0xF),
                   insn.off, _s32(insn.imm))


def iter_insns(buf) -> Iterator[Tuple[int, Insn]]:
    """(slot index, instruction) for every slot, the second half of ld_imm64 included."""
    for i in range(count(buf)):
        yield i, decode(buf, i)


def set_imm(buf: bytearray, index: int, imm: int) -> None:
    struct.pack_into("<i", buf, index * INSN_SIZE + 4, _s32(imm))


def set_off(buf: bytearray, index: int, off: int) -> None:
    struct.pack_into("<h", buf, index * INSN_SIZE + 2, off)


def set_src(buf: bytearray, index: int, src: int) -> None:
    pos = index * INSN_SIZE + 1
    buf[pos] = (buf[pos] & 0x0F) | ((src & 0xF) << 4)


def ld_imm64_value(buf, index: int) -> int:
    """The 64-bit immediate of the ld_imm64 at `index` (low half first)."""
    lo = struct.unpack_from("<I", buf, index * INSN_SIZE + 4)[0]
    hi = struct.unpack_from("<I", buf, (index + 1) * INSN_SIZE + 4)[0]
    return lo | (hi << 32)


def set_ld_imm64_value(buf: bytearray, index: int, value: int) -> None:
    value &= 0xFFFFFFFFFFFFFFFF
    struct.pack_into("<I", buf, index * INSN_SIZE + 4, value & 0xFFFFFFFF)
    struct.pack_into("<I", buf, (index + 1) * INSN_SIZE + 4, value >> 32)


def ld_imm64(dst: int, value: int, src: int = 0) -> bytes:
    """A complete two-slot ld_imm64."""
    value &= 0xFFFFFFFFFFFFFFFF
    return (Insn(OP_LD_IMM64, dst, src, 0, value & 0xFFFFFFFF).encode()
            + Insn(0, 0, 0, 0, value >> 32).encode())


def mov64_imm(dst: int, imm: int) -> bytes:
    return Insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm).encode()


def call_helper(helper_id: int) -> bytes:
    return Insn(OP_CALL, 0, 0, 0, helper_id).encode()


def exit_insn() -> bytes:
    return Insn(OP_EXIT).encode()


def ldx_mem(size: int, dst: int, src: int, off: int) -> bytes:
    """dst = *(size *)(src + off); size one of BPF_B, BPF_H, BPF_W, BPF_DW."""
    return Insn(BPF_LDX | BPF_MEM | size, dst, src, off, 0).encode()


def alu32_imm(op: int, dst: int, imm: int) -> bytes:
    """wdst op= imm on the low 32 bits (the upper half is zeroed)."""
    return Insn(BPF_ALU | op | BPF_K, dst, 0, 0, imm).encode()


def jmp32_imm(op: int, dst: int, imm: int, off: int) -> bytes:
    """if (u32)dst op (u32)imm: skip off instructions. Comparing 32 bits means an imm with
    the top bit set is not sign-extended against a zero-extended u32 load."""
    return Insn(BPF_JMP32 | op | BPF_K, dst, 0, off, imm).encode()


def ja(off: int) -> bytes:
    return Insn(BPF_JMP | BPF_JA, 0, 0, off, 0).encode()
