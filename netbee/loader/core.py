"""CO-RE: relocate a program's field/type/enum accesses from the object's BTF to a target BTF.

A pure pipeline in libbpf's terms (relo_core.c): find target candidates by essential name (here),
parse and match the access string and compute values (core_spec.py, with the type rules of
core_types.py), and check that every matching candidate agrees.  `relocate` returns one Fixup per
relocation; `apply_fixups` patches instructions separately (bpf_core_patch_insn), poisoning those
whose relocation cannot be satisfied so that only reachable uses fail in the verifier.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from netbee.loader.btf_ext import CoreReloKind
from netbee.loader.core_spec import ENUMVAL_KINDS, FIELD_KINDS, Spec, Value, compute, match_spec, parse_spec
from netbee.loader.core_types import U64, CoreFail, essential_name, kind_compat, type_at
from netbee.loader.errors import BTFError, CoreRelocationError
from netbee.loader.record import Record

if TYPE_CHECKING:
    from netbee.loader.btf import Btf
    from netbee.loader.btf_ext import CoreRelo

__all__ = ["Fixup", "relocate", "apply_fixups", "find_candidates", "candidate_lookups", "essential_name",
           "POISON_HELPER_ID", "U64"]

POISON_HELPER_ID = 0xBAD2310  # libbpf's "bad relo" sentinel: "invalid func unknown#195896080"

# BPF instruction classes and fields used by the patcher
_CLASS_LD, _CLASS_LDX, _CLASS_ST, _CLASS_STX, _CLASS_ALU, _CLASS_ALU64 = 0, 1, 2, 3, 4, 7
_LD_IMM64 = 0x18  # BPF_LD | BPF_IMM | BPF_DW
_CALL = 0x85  # BPF_JMP | BPF_CALL
_SIZE_TO_BYTES = {0x18: 8, 0x00: 4, 0x08: 2, 0x10: 1}  # BPF_DW, BPF_W, BPF_H, BPF_B
_BYTES_TO_SIZE = {v: k for k, v in _SIZE_TO_BYTES.items()}
_INSN = struct.Struct("<BBhi")


class Fixup(Record):
    """The outcome of one CO-RE relocation (bpf_core_relo_res plus context for messages)."""
    __slots__ = ("insn_index", "kind", "local_value", "target_value", "poison", "reason", "program",
                 "type_name", "access", "validate", "local_size", "target_size", "bad_size_change")

    def __init__(self, insn_index: int,
                 kind: CoreReloKind, local_value: int, target_value: int, poison: bool, reason: str,
                 program: str = "", type_name: str = "", access: str = "", validate: bool = True,
                 local_size: int = 0, target_size: int = 0, bad_size_change: bool = False) -> None:
        self.insn_index = insn_index
        self.kind = kind
        self.local_value = local_value
        self.target_value = target_value
        self.poison = poison
        self.reason = reason
        self.program = program
        self.type_name = type_name
        self.access = access
        self.validate = validate   # check that the instruction holds local_value before patching
        self.local_size = local_size   # memory access size for FIELD_BYTE_OFFSET (0 = not a sized field)
        self.target_size = target_size
        self.bad_size_change = bad_size_change   # a load/store of this field cannot be resized safely

    def where(self) -> str:
        return (f"program {self.program!r} insn #{self.insn_index}: CO-RE relocation {self.kind.name} "
                f"of {self.type_name or '<anon>'} access {self.access!r}")


# ---------------------------------------------------------------------------------------------
# candidates and the driver

def candidate_lookups(local_btf: "Btf", relos: Iterable[CoreRelo]) -> Tuple[Set[str], Set[str]]:
    """(names, prefixes) find_candidates() will ask a target BTF for, relocating these relos:
    for a search of the target's strings ahead of time (Btf.search_kernel_strings)."""
    names: Set[str] = set()
    for r in relos:
        if r.kind == CoreReloKind.TYPE_ID_LOCAL:
            continue
        try:
            name = type_at(local_btf, r.type_id).name
        except (BTFError, CoreFail):
            continue   # relocate() reports it
        if name:
            names.add(essential_name(name))
    return names, {n + "___" for n in names}


def find_candidates(local_btf: "Btf", local_id: int, target_btf: "Btf") -> List[int]:
    """Target type ids with the local type's essential name and a compatible kind, ascending.

    Exact names come from btf.find(); flavors (`name___suffix`) from one prefix search of the
    target's string table, so no index of every flavored name in vmlinux is built."""
    lt = type_at(local_btf, local_id)
    if not lt.name:
        raise CoreFail("CO-RE relocations against anonymous types are not supported")
    ess = essential_name(lt.name)
    ids = set(target_btf.find(ess)) | set(target_btf.ids_with_prefix(ess + "___"))
    out = []
    for i in sorted(ids):
        t = target_btf.type(i)
        if i > 0 and t.name and kind_compat(t, lt) and essential_name(t.name) == ess:
            out.append(i)
    return out


_MEMO = "relocations"  # cand_cache key of the result memo (candidate entries are keyed by int)


def _relocate_memo(relo: "CoreRelo", local_btf: "Btf", target_btf: "Btf",
                   cache: Dict[Any, Any]) -> Tuple[Value, Value, bool, str]:
    """_relocate_one, memoized: programs repeat the same accesses (netbee.bpf.o: 844 relocations,
    32 distinct).  The key holds the candidates as they stand before the relocation and the memo
    the pruned list after it, so a hit leaves the cache as recomputing would."""
    memo = cache.get(_MEMO)
    if memo is None:
        memo = cache[_MEMO] = {}
    before = cache.get(relo.type_id)
    key = (relo.type_id, relo.access_str, int(relo.kind), None if before is None else tuple(before))
    hit = memo.get(key)
    if hit is not None:
        res, after = hit
        if after is not None:
            cache[relo.type_id] = list(after)
        return res
    res = _relocate_one(relo, local_btf, target_btf, cache)
    after = cache.get(relo.type_id)
    memo[key] = (res, None if after is None else tuple(after))
    return res


def _relocate_one(relo: "CoreRelo", local_btf: "Btf", target_btf: "Btf",
                  cache: Dict[Any, Any]) -> Tuple[Value, Value, bool, str]:
    kind = CoreReloKind(relo.kind)
    local = parse_spec(local_btf, relo.type_id, relo.access_str, kind)
    if kind == CoreReloKind.TYPE_ID_LOCAL:
        res = Value(value=relo.type_id, validate=False)
        return res, Value(value=relo.type_id), False, "local type id"
    if relo.type_id not in cache:
        cache[relo.type_id] = find_candidates(local_btf, relo.type_id, target_btf)
    cands = cache[relo.type_id]
    matched: List[int] = []
    chosen: Optional[Tuple[Value, Value, bool, Spec]] = None
    for cid in cands:
        targ = match_spec(local, target_btf, cid)
        if targ is None:
            continue
        lres, tres, bad = compute(kind, local, targ)
        if chosen is None:
            chosen = (lres, tres, bad, targ)
        else:
            first = chosen[3]
            if targ.bit_offset != first.bit_offset:
                raise CoreFail(f"candidates [{first.root_id}] and [{cid}] disagree on the field offset "
                            f"({first.bit_offset} != {targ.bit_offset} bits)")
            if tres.poison != chosen[1].poison or tres.value != chosen[1].value:
                raise CoreFail(f"candidates [{first.root_id}] and [{cid}] disagree on the value "
                            f"({chosen[1].value} != {tres.value})")
        matched.append(cid)
    if matched:
        # later relocations of the same local type only consider the candidates that matched
        cache[relo.type_id] = matched
        lres, tres, bad, targ = chosen  # type: ignore[misc]
        reason = f"matched target type [{targ.root_id}] {targ.describe() if targ.acc else ''}".rstrip()
        return lres, tres, bad, reason
    lres, tres, bad = compute(kind, local, None)
    if not cands:
        reason = f"no type named {essential_name(type_at(local_btf, relo.type_id).name)!r} in target BTF"
    elif kind in ENUMVAL_KINDS:
        reason = f"enumerator {local.acc[0].name!r} not found in any of {len(cands)} target candidate(s)"
    elif kind in FIELD_KINDS:
        reason = f"field {local.describe()} not found in any of {len(cands)} target candidate(s)"
    else:
        reason = f"none of {len(cands)} target candidate(s) is compatible"
    return lres, tres, bad, reason


def relocate(program_name: str, relos: Sequence["CoreRelo"], local_btf: "Btf", target_btf: "Btf",
             cand_cache: Optional[Dict[Any, Any]] = None) -> List[Fixup]:
    """Resolve every CO-RE relocation of one program against target_btf.

    Raises CoreRelocationError for relocations libbpf would refuse (bad access strings,
    ambiguous candidates, unreadable bitfields).  Pass one cand_cache dict to several calls to
    share candidate pruning across programs, as libbpf does within one object load (the same
    local and target BTF for every call); it also memoizes results of repeated relocations."""
    cache: Dict[Any, Any] = {} if cand_cache is None else cand_cache
    fixups: List[Fixup] = []
    for relo in relos:
        insn_index = relo.insn_off // 8
        try:
            kind = CoreReloKind(relo.kind)
        except ValueError:
            kind = None  # type: ignore[assignment]
        type_name = _safe_name(local_btf, relo.type_id)
        where = (f"program {program_name!r} insn #{insn_index}: CO-RE relocation "
                 f"{kind.name if kind is not None else relo.kind} of {type_name} "
                 f"access {relo.access_str!r}")
        if kind is None:
            raise CoreRelocationError(f"{where}: unknown relocation kind")
        if relo.insn_off % 8:
            raise CoreRelocationError(f"{where}: instruction offset {relo.insn_off} not a multiple of 8")
        try:
            lres, tres, bad, reason = _relocate_memo(relo, local_btf, target_btf, cache)
        except CoreFail as exc:
            raise CoreRelocationError(f"{where}: {exc}") from None
        fx = Fixup(
            insn_index=insn_index, kind=kind, local_value=lres.value & U64,
            target_value=tres.value & U64, poison=tres.poison, reason=reason,
            program=program_name, type_name=type_name, access=relo.access_str,
            validate=lres.validate, local_size=lres.size, target_size=tres.size,
            bad_size_change=bad)
        fx.reason = f"{fx.where()}: {reason}"  # self-contained, e.g. for a verifier-error hint
        fixups.append(fx)
    return fixups


def _safe_name(btf: "Btf", type_id: int) -> str:
    try:
        t = btf.type(type_id)
    except Exception:  # noqa: BLE001 - only for the message; the real error is raised later
        return f"[{type_id}]"
    kind = t.kind.name.lower()
    return f"{kind} {t.name}" if t.name else f"anonymous {kind} [{type_id}]"


# ---------------------------------------------------------------------------------------------
# patching


def _poison(insns: bytearray, idx: int) -> None:
    _INSN.pack_into(insns, idx * 8, _CALL, 0, 0, POISON_HELPER_ID)


def apply_fixups(insns: bytearray, fixups: Iterable[Fixup]) -> List[Tuple[int, str]]:
    """Patch instructions in place (bpf_core_patch_insn).

    Returns (insn_index, reason) for every instruction poisoned, so the loader can explain a
    verifier rejection at "invalid func unknown#195896080"."""
    poisoned: List[Tuple[int, str]] = []
    count = len(insns) // 8
    for fx in fixups:
        idx = fx.insn_index
        if not 0 <= idx < count:
            raise CoreRelocationError(f"{fx.where()}: instruction index out of range (program has {count})")
        code, regs, off, imm = _INSN.unpack_from(insns, idx * 8)
        cls = code & 0x07
        is_ldimm64 = code == _LD_IMM64
        if is_ldimm64 and idx + 1 >= count:
            raise CoreRelocationError(f"{fx.where()}: ld_imm64 truncated")
        if fx.poison:
            _poison_at(insns, idx, is_ldimm64)
            poisoned.append((idx, fx.reason))
            continue
        orig, new = fx.local_value & U64, fx.target_value & U64
        if cls in (_CLASS_ALU, _CLASS_ALU64):
            if code & 0x08:
                raise CoreRelocationError(f"{fx.where()}: ALU instruction uses a register source")
            if fx.validate and (imm & U64) != orig:
                raise CoreRelocationError(f"{fx.where()}: instruction holds {imm}, expected {orig}")
            _INSN.pack_into(insns, idx * 8, code, regs, off, _s32(new))
        elif cls in (_CLASS_LDX, _CLASS_ST, _CLASS_STX):
            if fx.validate and (off & U64) != orig:
                raise CoreRelocationError(f"{fx.where()}: instruction offset is {off}, expected {orig}")
            if new > 0x7FFF:
                raise CoreRelocationError(f"{fx.where()}: offset {new} does not fit the instruction")
            if fx.bad_size_change:
                _poison_at(insns, idx, False)
                poisoned.append((idx, f"{fx.where()}: field size changes from {fx.local_size} to "
                                      f"{fx.target_size} bytes and is not a pointer or unsigned integer"))
                continue
            if fx.target_size != fx.local_size:
                have = _SIZE_TO_BYTES.get(code & 0x18)
                if have != fx.local_size:
                    raise CoreRelocationError(f"{fx.where()}: instruction accesses {have} bytes, "
                                              f"expected {fx.local_size}")
                size_bits = _BYTES_TO_SIZE.get(fx.target_size)
                if size_bits is None:
                    raise CoreRelocationError(f"{fx.where()}: target field size {fx.target_size} "
                                              f"cannot be loaded by one instruction")
                code = (code & 0xE0) | size_bits | cls
            _INSN.pack_into(insns, idx * 8, code, regs, new, imm)
        elif cls == _CLASS_LD:
            if not is_ldimm64:
                raise CoreRelocationError(f"{fx.where()}: ld_imm64 has an unexpected form")
            code1, regs1, off1, imm1 = _INSN.unpack_from(insns, (idx + 1) * 8)
            if regs & 0xF0 or off or code1 or regs1 or off1:
                raise CoreRelocationError(f"{fx.where()}: ld_imm64 has an unexpected form")
            have = (imm & 0xFFFFFFFF) | ((imm1 & 0xFFFFFFFF) << 32)
            if fx.validate and have != orig:
                raise CoreRelocationError(f"{fx.where()}: instruction holds {have}, expected {orig}")
            _INSN.pack_into(insns, idx * 8, code, regs, off, _s32(new))
            _INSN.pack_into(insns, (idx + 1) * 8, code1, regs1, off1, _s32(new >> 32))
        else:
            raise CoreRelocationError(f"{fx.where()}: cannot relocate instruction with opcode {code:#04x}")
    return poisoned


def _poison_at(insns: bytearray, idx: int, is_ldimm64: bool) -> None:
    # the second ld_imm64 slot is poisoned too, or the verifier reports "unknown opcode 00"
    if is_ldimm64:
        _poison(insns, idx + 1)
    _poison(insns, idx)


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v
