"""Dev-only: our CO-RE result vs libbpf's for one program of an object and one target BTF.

Ours: the program's instructions straight from the ELF section, CO-RE relocated by core.py.
libbpf's: the instructions it passes to BPF_PROG_LOAD (captured by libbpf_oracle.c), which also
carry the work of other loader stages: map/global-data ld_imm64 (src_reg and immediates) and
bpf-to-bpf call offsets, with called subprograms appended.  So instructions that an ELF relocation
rewrites are compared without src_reg and immediates; everything else, bit for bit.  Appended
subprograms are located by following libbpf's call instructions and compared the same way."""
from __future__ import annotations

import pathlib
import struct
import subprocess
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection

from netbee.loader import core
from netbee.loader.btf import Btf
from netbee.loader.btf_ext import BtfExt, CoreRelo

INSN = struct.Struct("<BBhi")


@dataclass
class Func:
    name: str
    section: str
    start: int           # instruction index in the section
    count: int
    reloc_at: Dict[int, Tuple[str, int, int]] = field(default_factory=dict)  # idx -> (sym, sym type, value)


@dataclass
class ObjectView:
    path: pathlib.Path
    btf: Btf
    relos: Dict[str, List[CoreRelo]]
    sections: Dict[str, bytes]
    funcs: Dict[str, Func]

    @classmethod
    def load(cls, path: pathlib.Path) -> "ObjectView":
        with open(path, "rb") as f:
            elf = ELFFile(f)
            btf = Btf.parse(elf.get_section_by_name(".BTF").data())
            ext = BtfExt.parse(elf.get_section_by_name(".BTF.ext").data(), btf)
            sections: Dict[str, bytes] = {}
            for sec in elf.iter_sections():
                if sec["sh_type"] == "SHT_PROGBITS" and sec["sh_flags"] & 0x4:
                    sections[sec.name] = sec.data()
            symtab = elf.get_section_by_name(".symtab")
            funcs: Dict[str, Func] = {}
            for sym in symtab.iter_symbols():
                if sym["st_info"]["type"] == "STT_FUNC" and sym["st_size"]:
                    sec = elf.get_section(sym["st_shndx"]).name
                    funcs[sym.name] = Func(sym.name, sec, sym["st_value"] // 8, sym["st_size"] // 8)
            for rel in elf.iter_sections():
                if not isinstance(rel, RelocationSection):
                    continue
                target = elf.get_section(rel["sh_info"]).name
                if target not in sections:
                    continue
                for r in rel.iter_relocations():
                    sym = symtab.get_symbol(r["r_info_sym"])
                    idx = r["r_offset"] // 8
                    for fn in funcs.values():
                        if fn.section == target and fn.start <= idx < fn.start + fn.count:
                            fn.reloc_at[idx - fn.start] = (sym.name, sym["st_info"]["type"], sym["st_value"])
        return cls(pathlib.Path(path), btf, ext.core_relos, sections, funcs)

    def ours(self, fn: Func, target: Btf) -> Tuple[bytearray, List[core.Fixup]]:
        raw = self.sections[fn.section]
        insns = bytearray(raw[fn.start * 8:(fn.start + fn.count) * 8])
        relos = [CoreRelo(r.insn_off - fn.start * 8, r.type_id, r.access_str, r.kind)
                 for r in self.relos.get(fn.section, [])
                 if fn.start <= r.insn_off // 8 < fn.start + fn.count]
        fixups = core.relocate(fn.name, relos, self.btf, target)
        core.apply_fixups(insns, fixups)
        return insns, fixups

    def callee(self, fn: Func, idx: int) -> Optional[Func]:
        """The function a bpf-to-bpf call at fn[idx] targets (as libbpf resolves it)."""
        code, regs, _, imm = INSN.unpack_from(self.sections[fn.section], (fn.start + idx) * 8)
        if code != 0x85 or (regs >> 4) != 1:
            return None
        rel = fn.reloc_at.get(idx)
        if rel is None:  # relative call inside the same section
            section, target = fn.section, fn.start + idx + 1 + imm
        else:
            _, _, value = rel
            section, target = ".text", value // 8 + imm + 1
        for f in self.funcs.values():
            if f.section == section and f.start == target:
                return f
        raise AssertionError(f"{fn.name}: call at {idx} to {section}+{target} matches no function")


def _masked(insns: bytes, i: int, relocated: bool) -> Tuple[int, ...]:
    code, regs, off, imm = INSN.unpack_from(insns, i * 8)
    if relocated:
        return (code, regs & 0x0F, off)
    return (code, regs, off, imm)


@dataclass
class Comparison:
    compared: int = 0
    relocated_by_core: int = 0
    changed_by_core: int = 0
    fixups: int = 0
    mismatches: List[str] = field(default_factory=list)


def compare(view: ObjectView, prog: str, target: Btf, theirs: bytes) -> Comparison:
    res = Comparison()
    todo: List[Tuple[Func, int]] = [(view.funcs[prog], 0)]
    seen: Set[str] = set()
    while todo:
        fn, base = todo.pop()
        if fn.name in seen:
            continue
        seen.add(fn.name)
        ours, fixups = view.ours(fn, target)
        res.fixups += len(fixups)
        core_idx = {f.insn_index for f in fixups}
        raw = view.sections[fn.section][fn.start * 8:(fn.start + fn.count) * 8]
        if base + fn.count > len(theirs) // 8:
            res.mismatches.append(f"{fn.name}: libbpf output too short for it at {base}")
            continue
        skip_next = False
        for i in range(fn.count):
            relocated = i in fn.reloc_at or skip_next
            skip_next = i in fn.reloc_at and INSN.unpack_from(raw, i * 8)[0] == 0x18
            a, b = _masked(ours, i, relocated), _masked(theirs, base + i, relocated)
            res.compared += 1
            if i in core_idx:
                res.relocated_by_core += 1
                res.changed_by_core += ours[i * 8:i * 8 + 8] != raw[i * 8:i * 8 + 8]
            if a != b:
                res.mismatches.append(f"{fn.name}+{i} (libbpf insn {base + i}): ours {a} libbpf {b}")
            callee = view.callee(fn, i)
            if callee is not None:
                imm = INSN.unpack_from(theirs, (base + i) * 8)[3]
                todo.append((callee, base + i + 1 + imm))
    return res


_HOST_BTF: List[Btf] = []


def attach_override(section: str) -> Optional[str]:
    """A stand-in attach target when this machine's kernel lacks the section's (see the harness)."""
    kind, _, name = section.partition("/")
    if kind not in ("fentry", "fexit", "fmod_ret", "tp_btf") or not name:
        return None
    if not _HOST_BTF:
        _HOST_BTF.append(Btf.load_kernel())
    host = _HOST_BTF[0]
    if kind == "tp_btf":
        return None if host.find("btf_trace_" + name) else "netif_receive_skb"
    return None if host.find(name) else "ip_rcv"


def run_libbpf(harness: pathlib.Path, obj: pathlib.Path, target_path: pathlib.Path, prog: str,
               out: pathlib.Path, section: str = "") -> bytes:
    override = attach_override(section)
    proc = subprocess.run([str(harness), str(obj), str(target_path), prog, str(out)]
                          + ([override] if override else []),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"libbpf oracle failed for {obj.name}:{prog} on {target_path}: "
                           f"exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return out.read_bytes()


def compare_linked(obj_spec, prog: str, target: Btf, theirs: bytes) -> Comparison:
    """Whole-program comparison through netbee's own ELF loader (elf.py's ObjectSpec links
    subprograms and rebases CO-RE records as libbpf does): only map fd immediates may differ,
    and kfunc calls' BTF ids: libbpf resolves those in the running kernel's BTF whatever the
    target (btf_custom_path is for CO-RE only), so kfunc.resolve against that BTF must agree."""
    from netbee.loader import kfunc

    spec = obj_spec.programs[prog]
    insns = bytearray(spec.insns)
    fixups = core.relocate(prog, spec.core_relos, obj_spec.btf, target)
    core.apply_fixups(insns, fixups)
    if spec.kfunc_calls:
        kfunc.resolve(prog, insns, spec.kfunc_calls, Btf.load_kernel())
    res = Comparison(fixups=len(fixups))
    fd_slots = {r.insn_index for r in spec.map_relocs}
    if len(insns) != len(theirs):
        res.mismatches.append(f"{prog}: {len(insns) // 8} instructions, libbpf {len(theirs) // 8}")
        return res
    for i in range(len(insns) // 8):
        a, b = _masked(insns, i, False), _masked(theirs, i, False)
        if i in fd_slots:  # the map fd libbpf got from the kernel vs our placeholder
            a, b = a[:3], b[:3]
        res.compared += 1
        if a != b:
            res.mismatches.append(f"{prog} insn {i}: ours {a} libbpf {b}")
    return res
