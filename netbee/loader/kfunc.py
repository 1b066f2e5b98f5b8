"""Calls to kernel functions (kfuncs) declared `extern ... __ksym` in the C source.

clang emits such a call as a BPF-to-BPF call relocated against an undefined symbol; the linker
(elf.py) turns it into a kfunc call with no target yet and records a KfuncCall. Preparing the
program for one kernel (collection.py) writes the kernel's BTF id of the function into the call.
Pure: the kernel's BTF is an argument, nothing here touches the kernel.
"""
from __future__ import annotations

from typing import Any, Iterable

from netbee.loader import insn as I
from netbee.loader.btf_types import BtfKind
from netbee.loader.errors import ObjectFileError
from netbee.loader.record import FrozenRecord

# kfuncs whose result is their first argument: they only change what the verifier knows about a
# pointer, and the verifier rewrites each call to them into `r0 = r1`. On a kernel without one the
# loader writes that move itself (what the kernel would have run).
PASS_THROUGH = frozenset({"bpf_rdonly_cast"})


class KfuncCall(FrozenRecord):
    __slots__ = ("insn_index", "name")

    def __init__(self, insn_index: int, name: str) -> None:
        self.insn_index = insn_index   # the call instruction, in program slots
        self.name = name


def resolve(program: str, insns: bytearray, calls: Iterable[KfuncCall], kernel_btf: Any) -> None:
    """Point every kfunc call of `insns` at the kernel's function of that name (vmlinux BTF)."""
    for c in calls:
        ins = I.decode(insns, c.insn_index)
        if ins.opcode != I.OP_CALL or ins.src != I.BPF_PSEUDO_KFUNC_CALL:
            raise ObjectFileError(f"program {program!r}: instruction {c.insn_index} is not the kfunc "
                                  f"call to {c.name!r} the object recorded")
        ids = kernel_btf.find(c.name, BtfKind.FUNC) if kernel_btf is not None else []
        if ids:
            I.set_imm(insns, c.insn_index, ids[0])
            I.set_off(insns, c.insn_index, 0)      # 0: the function is in vmlinux, not a module
        elif c.name in PASS_THROUGH:
            I.write(insns, c.insn_index, I.Insn(I.BPF_ALU64 | I.BPF_MOV | I.BPF_X, 0, 1, 0, 0))
        elif kernel_btf is None:
            raise ObjectFileError(f"program {program!r} calls kernel function {c.name!r}: "
                                  "that needs the kernel's BTF")
        else:
            raise ObjectFileError(f"program {program!r} calls kernel function {c.name!r}, "
                                  "which this kernel does not have")
