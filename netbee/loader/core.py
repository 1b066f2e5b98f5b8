"""CO-RE: relocate a program's field/type/enum accesses from the object's BTF to a target BTF.

A pure pipeline in libbpf's terms (relo_core.c): parse the access string against the local BTF,
find target candidates by essential name, match each candidate, compute the value for the
relocation kind, and check that every matching candidate agrees.  `relocate` returns one Fixup
per relocation; `apply_fixups` patches instructions separately (bpf_core_patch_insn), poisoning
those whose relocation cannot be satisfied so that only reachable uses fail in the verifier.
"""
from __future__ import annotations

import re
import struct
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Tuple

from netbee.loader.btf import BtfKind
from netbee.loader.btf_ext import CoreReloKind
from netbee.loader.errors import BTFError, CoreRelocationError

if TYPE_CHECKING:
    from netbee.loader.btf import Btf
    from netbee.loader.btf_ext import CoreRelo

POISON_HELPER_ID = 0xBAD2310  # libbpf's "bad relo" sentinel: "invalid func unknown#195896080"
SPEC_MAX_LEN = 64  # BPF_CORE_SPEC_MAX_LEN
MAX_DEPTH = 32  # libbpf's recursion bound for type comparisons and size resolution
U64 = (1 << 64) - 1

_FIELD_KINDS = frozenset({
    CoreReloKind.FIELD_BYTE_OFFSET, CoreReloKind.FIELD_BYTE_SIZE, CoreReloKind.FIELD_EXISTS,
    CoreReloKind.FIELD_SIGNED, CoreReloKind.FIELD_LSHIFT_U64, CoreReloKind.FIELD_RSHIFT_U64,
})
_TYPE_KINDS = frozenset({
    CoreReloKind.TYPE_ID_LOCAL, CoreReloKind.TYPE_ID_TARGET, CoreReloKind.TYPE_EXISTS,
    CoreReloKind.TYPE_MATCHES, CoreReloKind.TYPE_SIZE,
})
_ENUMVAL_KINDS = frozenset({CoreReloKind.ENUMVAL_EXISTS, CoreReloKind.ENUMVAL_VALUE})

_MODS = frozenset({BtfKind.TYPEDEF, BtfKind.VOLATILE, BtfKind.CONST, BtfKind.RESTRICT, BtfKind.TYPE_TAG})
_COMPOSITE = frozenset({BtfKind.STRUCT, BtfKind.UNION})
_ANY_ENUM = frozenset({BtfKind.ENUM, BtfKind.ENUM64})
_ACCESS_RE = re.compile(r"\d+(?::\d+)*")

# BPF instruction classes and fields used by the patcher
_CLASS_LD, _CLASS_LDX, _CLASS_ST, _CLASS_STX, _CLASS_ALU, _CLASS_JMP, _CLASS_ALU64 = 0, 1, 2, 3, 4, 5, 7
_LD_IMM64 = 0x18  # BPF_LD | BPF_IMM | BPF_DW
_CALL = 0x85  # BPF_JMP | BPF_CALL
_SIZE_TO_BYTES = {0x18: 8, 0x00: 4, 0x08: 2, 0x10: 1}  # BPF_DW, BPF_W, BPF_H, BPF_B
_BYTES_TO_SIZE = {v: k for k, v in _SIZE_TO_BYTES.items()}
_INSN = struct.Struct("<BBhi")


class _Fail(Exception):
    """Internal: a relocation error; turned into CoreRelocationError with full context."""


@dataclass
class Fixup:
    """The outcome of one CO-RE relocation (bpf_core_relo_res plus context for messages)."""

    insn_index: int
    kind: CoreReloKind
    local_value: int
    target_value: int
    poison: bool
    reason: str
    program: str = ""
    type_name: str = ""
    access: str = ""
    validate: bool = True  # check that the instruction holds local_value before patching
    local_size: int = 0  # memory access size for FIELD_BYTE_OFFSET (0 = not a sized field)
    target_size: int = 0
    bad_size_change: bool = False  # a load/store of this field cannot be resized safely

    def where(self) -> str:
        return (f"program {self.program!r} insn #{self.insn_index}: CO-RE relocation {self.kind.name} "
                f"of {self.type_name or '<anon>'} access {self.access!r}")


@dataclass
class _Acc:
    type_id: int
    idx: int
    name: Optional[str]


@dataclass
class _Spec:
    btf: "Btf"
    root_id: int
    kind: CoreReloKind
    raw: List[int] = field(default_factory=list)
    acc: List[_Acc] = field(default_factory=list)
    bit_offset: int = 0

    def describe(self) -> str:
        parts = []
        for i, a in enumerate(self.acc):
            if a.name is not None:
                parts.append("." + a.name)
            elif i > 0 or a.idx > 0:
                parts.append(f"[{a.idx}]")
        return "".join(parts) or "<root>"


# ---------------------------------------------------------------------------------------------
# BTF helpers with libbpf's semantics


def _type(btf: "Btf", type_id: int):
    try:
        return btf.type(type_id)
    except (IndexError, KeyError, BTFError) as exc:
        raise _Fail(f"type id {type_id} not in BTF") from exc


def _skip_mods(btf: "Btf", type_id: int) -> Tuple[int, object]:
    """Skip typedefs and modifiers (btf_type_skip_modifiers)."""
    for _ in range(MAX_DEPTH * 8):
        t = _type(btf, type_id)
        if t.kind not in _MODS:
            return type_id, t
        type_id = t.type
    raise _Fail(f"modifier loop at type id {type_id}")


def _resolve_size(btf: "Btf", type_id: int) -> int:
    """Size in bytes of a type as btf__resolve_size computes it; _Fail when it has none."""
    nelems = 1
    for _ in range(MAX_DEPTH):
        t = _type(btf, type_id)
        k = t.kind
        if k in (BtfKind.INT, BtfKind.FLOAT, BtfKind.STRUCT, BtfKind.UNION, BtfKind.ENUM,
                 BtfKind.ENUM64, BtfKind.DATASEC):
            size = t.size
            break
        if k == BtfKind.PTR:
            size = 8
            break
        if k in _MODS or k == BtfKind.VAR:
            type_id = t.type
        elif k == BtfKind.ARRAY:
            if nelems and t.nelems > 0xFFFFFFFF // nelems:
                raise _Fail(f"array type id {type_id} too large")
            nelems *= t.nelems
            type_id = t.type
        else:
            raise _Fail(f"type id {type_id} ({k.name}) has no size")
    else:
        raise _Fail(f"type chain too deep at id {type_id}")
    total = nelems * size
    if total > 0xFFFFFFFF:
        raise _Fail(f"type id {type_id} size overflows")
    return total


def essential_name(name: str) -> str:
    """Name without its `___flavor` suffix (libbpf bpf_core_essential_name_len)."""
    for i in range(len(name) - 5, -1, -1):
        if name[i] != "_" and name[i + 1:i + 4] == "___" and name[i + 4] != "_":
            return name[:i + 1]
    return name


def _kind_compat(a, b) -> bool:
    return a.kind == b.kind or (a.kind in _ANY_ENUM and b.kind in _ANY_ENUM)


def _vlen(t) -> int:
    if t.kind in _COMPOSITE:
        return len(t.members)
    if t.kind in _ANY_ENUM:
        return len(t.values)
    if t.kind == BtfKind.FUNC_PROTO:
        return len(t.params)
    return 0


def _enum_value(t, idx: int) -> int:
    """Enumerator value widened to u64 as libbpf does (32-bit enumerators sign-extend)."""
    v = t.values[idx].value
    if t.kind == BtfKind.ENUM:
        v &= 0xFFFFFFFF
        if v & 0x80000000:
            v -= 1 << 32
    return v & U64


def _is_signed_int(t) -> bool:
    return t.kind == BtfKind.INT and bool(t.encoding & 1)


# ---------------------------------------------------------------------------------------------
# type compatibility (three different rule sets, as libbpf)


def _types_are_compat(lbtf: "Btf", lid: int, tbtf: "Btf", tid: int, level: int = MAX_DEPTH) -> bool:
    """Rules for TYPE_* relocations other than TYPE_MATCHES (__bpf_core_types_are_compat)."""
    if not _kind_compat(_type(lbtf, lid), _type(tbtf, tid)):
        return False
    for _ in range(MAX_DEPTH):
        lid, lt = _skip_mods(lbtf, lid)
        tid, tt = _skip_mods(tbtf, tid)
        if not _kind_compat(lt, tt):
            return False
        k = lt.kind
        if k in (BtfKind.UNKN, BtfKind.STRUCT, BtfKind.UNION, BtfKind.ENUM, BtfKind.FWD, BtfKind.ENUM64):
            return True
        if k == BtfKind.INT:
            return lt.bits_offset == 0 and tt.bits_offset == 0
        if k == BtfKind.PTR:
            lid, tid = lt.type, tt.type
        elif k == BtfKind.ARRAY:
            lid, tid = lt.type, tt.type
        elif k == BtfKind.FUNC_PROTO:
            if len(lt.params) != len(tt.params):
                return False
            for lp, tp in zip(lt.params, tt.params):
                if level <= 0:
                    raise _Fail("function prototype nesting too deep")
                if not _types_are_compat(lbtf, _skip_mods(lbtf, lp.type)[0], tbtf,
                                         _skip_mods(tbtf, tp.type)[0], level - 1):
                    return False
            lid, tid = _skip_mods(lbtf, lt.ret_type)[0], _skip_mods(tbtf, tt.ret_type)[0]
        else:
            return False
    raise _Fail("type nesting too deep")


def _fields_are_compat(lbtf: "Btf", lid: int, tbtf: "Btf", tid: int) -> bool:
    """Rules for a matched field's type (bpf_core_fields_are_compat)."""
    for _ in range(MAX_DEPTH * 8):
        lid, lt = _skip_mods(lbtf, lid)
        tid, tt = _skip_mods(tbtf, tid)
        if lt.kind in _COMPOSITE and tt.kind in _COMPOSITE:
            return True
        if not _kind_compat(lt, tt):
            return False
        k = lt.kind
        if k in (BtfKind.PTR, BtfKind.FLOAT):
            return True
        if k in (BtfKind.FWD, BtfKind.ENUM, BtfKind.ENUM64):
            le, te = essential_name(lt.name), essential_name(tt.name)
            return not le or not te or le == te
        if k == BtfKind.INT:
            return lt.bits_offset == 0 and tt.bits_offset == 0
        if k == BtfKind.ARRAY:
            lid, tid = lt.type, tt.type
            continue
        return False
    raise _Fail("array nesting too deep")


def _names_match(lname: str, tname: str) -> bool:
    if not tname:
        return not lname
    return essential_name(lname) == essential_name(tname)


def _enums_match(lt, tt) -> bool:
    if lt.size != tt.size or len(lt.values) > len(tt.values):
        return False
    return all(any(_names_match(lv.name, tv.name) for tv in tt.values) for lv in lt.values)


def _composites_match(lbtf, lt, tbtf, tt, behind_ptr: bool, level: int) -> bool:
    if len(lt.members) > len(tt.members):
        return False
    for lm in lt.members:
        if not any(_names_match(lm.name, tm.name)
                   and _types_match(lbtf, lm.type, tbtf, tm.type, behind_ptr, level - 1)
                   for tm in tt.members):
            return False
    return True


def _types_match(lbtf: "Btf", lid: int, tbtf: "Btf", tid: int, behind_ptr: bool = False,
                 level: int = MAX_DEPTH) -> bool:
    """TYPE_MATCHES rules (__bpf_core_types_match)."""
    if level <= 0:
        raise _Fail("type nesting too deep for TYPE_MATCHES")
    for _ in range(MAX_DEPTH):
        lid, lt = _skip_mods(lbtf, lid)
        tid, tt = _skip_mods(tbtf, tid)
        if not _names_match(lt.name, tt.name):
            return False
        lk, tk = lt.kind, tt.kind
        if lk == BtfKind.UNKN:
            return lk == tk
        if lk == BtfKind.FWD:
            if behind_ptr and lk != tk:
                return (tk == BtfKind.STRUCT and not lt.is_union) or (tk == BtfKind.UNION and lt.is_union)
            return lk == tk and lt.is_union == tt.is_union
        if lk in _ANY_ENUM:
            return tk in _ANY_ENUM and _enums_match(lt, tt)
        if lk in _COMPOSITE:
            if behind_ptr:
                if lk == tk:
                    return True
                return tk == BtfKind.FWD and (lk == BtfKind.UNION) == tt.is_union
            return lk == tk and _composites_match(lbtf, lt, tbtf, tt, behind_ptr, level)
        if lk == BtfKind.INT:
            return (lk == tk and lt.size == tt.size
                    and (lt.encoding & 1) == (tt.encoding & 1))
        if lk == BtfKind.PTR:
            if lk != tk:
                return False
            behind_ptr = True
            lid, tid = lt.type, tt.type
        elif lk == BtfKind.ARRAY:
            if lk != tk or lt.nelems != tt.nelems:
                return False
            lid, tid = lt.type, tt.type
        elif lk == BtfKind.FUNC_PROTO:
            if lk != tk or len(lt.params) != len(tt.params):
                return False
            for lp, tp in zip(lt.params, tt.params):
                if not _types_match(lbtf, lp.type, tbtf, tp.type, behind_ptr, level - 1):
                    return False
            lid, tid = lt.ret_type, tt.ret_type
        else:
            return False
    raise _Fail("type nesting too deep for TYPE_MATCHES")


# ---------------------------------------------------------------------------------------------
# access specs


def _is_flex_array(btf: "Btf", acc: _Acc, arr) -> bool:
    """A zero-length array that is the last member of its struct may be indexed past its end."""
    if acc.name is None or arr.nelems > 0:
        return False
    return acc.idx == _vlen(_type(btf, acc.type_id)) - 1


def _parse_spec(btf: "Btf", type_id: int, access: str, kind: CoreReloKind) -> _Spec:
    """The local spec of a relocation (bpf_core_parse_spec)."""
    spec = _Spec(btf, type_id, kind)
    if kind in _TYPE_KINDS:
        if access != "0":
            raise _Fail("type relocation access string must be '0'")
        return spec
    if not _ACCESS_RE.fullmatch(access):
        raise _Fail("malformed access string")
    spec.raw = [int(x) for x in access.split(":")]
    if len(spec.raw) > SPEC_MAX_LEN:
        raise _Fail("access string too long")
    tid, t = _skip_mods(btf, type_id)
    idx = spec.raw[0]
    spec.acc.append(_Acc(tid, idx, None))
    if kind in _ENUMVAL_KINDS:
        if t.kind not in _ANY_ENUM or len(spec.raw) > 1 or idx >= len(t.values):
            raise _Fail("enum value relocation does not name an enumerator")
        spec.acc[0].name = t.values[idx].name
        return spec
    if kind not in _FIELD_KINDS:
        raise _Fail(f"unknown relocation kind {int(kind)}")
    spec.bit_offset = idx * _resolve_size(btf, tid) * 8
    for idx in spec.raw[1:]:
        tid, t = _skip_mods(btf, tid)
        if t.kind in _COMPOSITE:
            if idx >= len(t.members):
                raise _Fail(f"member index {idx} out of range")
            m = t.members[idx]
            spec.bit_offset += m.bit_offset
            if m.name:
                spec.acc.append(_Acc(tid, idx, m.name))
            tid = m.type
        elif t.kind == BtfKind.ARRAY:
            flex = _is_flex_array(btf, spec.acc[-1], t)
            tid, _ = _skip_mods(btf, t.type)
            if not flex and idx >= t.nelems:
                raise _Fail(f"array index {idx} out of bounds")
            spec.acc.append(_Acc(tid, idx, None))
            spec.bit_offset += idx * _resolve_size(btf, tid) * 8
        else:
            raise _Fail(f"access step {idx} into type id {tid} of kind {t.kind.name}")
    return spec


def _match_member(lbtf: "Btf", lacc: _Acc, tbtf: "Btf", tid: int, spec: _Spec) -> Optional[int]:
    """Find lacc's field in target composite tid, descending into anonymous members.

    Returns the matched member's type id, or None.  Pushes onto spec on success."""
    tid, tt = _skip_mods(tbtf, tid)
    if tt.kind not in _COMPOSITE:
        return None
    lmember = _type(lbtf, lacc.type_id).members[lacc.idx]
    for i, m in enumerate(tt.members):
        if len(spec.raw) == SPEC_MAX_LEN:
            raise _Fail("target struct nesting too deep")
        spec.bit_offset += m.bit_offset
        spec.raw.append(i)
        if not m.name:
            found = _match_member(lbtf, lacc, tbtf, m.type, spec)
            if found is not None:
                return found
        elif m.name == lmember.name:
            if _fields_are_compat(lbtf, lmember.type, tbtf, m.type):
                spec.acc.append(_Acc(tid, i, m.name))
                return m.type
            # libbpf stops at the first same-named member, compatible or not
            return None
        spec.bit_offset -= m.bit_offset
        spec.raw.pop()
    return None


def _match_spec(local: _Spec, tbtf: "Btf", tid: int) -> Optional[_Spec]:
    """Match the local spec against one candidate (bpf_core_spec_match); None if no match."""
    targ = _Spec(tbtf, tid, local.kind)
    if local.kind in _TYPE_KINDS:
        if local.kind == CoreReloKind.TYPE_MATCHES:
            ok = _types_match(local.btf, local.root_id, tbtf, tid)
        else:
            ok = _types_are_compat(local.btf, local.root_id, tbtf, tid)
        return targ if ok else None
    lacc0 = local.acc[0]
    if local.kind in _ENUMVAL_KINDS:
        tid, tt = _skip_mods(tbtf, tid)
        if tt.kind not in _ANY_ENUM:
            return None
        want = essential_name(lacc0.name or "")
        for i, v in enumerate(tt.values):
            if essential_name(v.name) == want:
                targ.acc.append(_Acc(tid, i, v.name))
                targ.raw.append(i)
                return targ
        return None
    for i, lacc in enumerate(local.acc):
        tid, tt = _skip_mods(tbtf, tid)
        if lacc.name is not None:
            found = _match_member(local.btf, lacc, tbtf, tid, targ)
            if found is None:
                return None
            tid = found
            continue
        if i > 0:
            if tt.kind != BtfKind.ARRAY:
                return None
            flex = _is_flex_array(tbtf, targ.acc[-1], tt)
            if not flex and lacc.idx >= tt.nelems:
                return None
            tid, _ = _skip_mods(tbtf, tt.type)
        if len(targ.raw) == SPEC_MAX_LEN:
            raise _Fail("target nesting too deep")
        targ.acc.append(_Acc(tid, lacc.idx, None))
        targ.raw.append(lacc.idx)
        targ.bit_offset += lacc.idx * _resolve_size(tbtf, tid) * 8
    return targ


# ---------------------------------------------------------------------------------------------
# values


@dataclass
class _Res:
    value: int = 0
    size: int = 0  # memory size of the accessed field, for FIELD_BYTE_OFFSET only
    type_id: int = 0
    validate: bool = True
    poison: bool = False


def _elem_size(btf: "Btf", type_id: int) -> int:
    """Size of the innermost element: loads of an array field read one element."""
    tid, t = _skip_mods(btf, type_id)
    while t.kind == BtfKind.ARRAY:
        tid, t = _skip_mods(btf, t.type)
    return _resolve_size(btf, tid)


def _field_value(kind: CoreReloKind, spec: Optional[_Spec]) -> _Res:
    """bpf_core_calc_field_relo; poison when the field is missing (except FIELD_EXISTS)."""
    res = _Res()
    if kind == CoreReloKind.FIELD_EXISTS:
        res.value = 1 if spec is not None else 0
        return res
    if spec is None:
        res.poison = True
        return res
    btf = spec.btf
    acc = spec.acc[-1]
    if acc.name is None:  # the access ends at an array element (or the root object)
        if kind == CoreReloKind.FIELD_BYTE_OFFSET:
            res.value = spec.bit_offset // 8
            res.size = _elem_size(btf, acc.type_id)
            res.type_id = acc.type_id
        elif kind == CoreReloKind.FIELD_BYTE_SIZE:
            res.value = _resolve_size(btf, acc.type_id)
        else:
            raise _Fail(f"{kind.name} cannot be applied to an array element")
        return res
    m = _type(btf, acc.type_id).members[acc.idx]
    field_id, mt = _skip_mods(btf, m.type)
    bit_off = spec.bit_offset
    bit_sz = m.bitfield_size
    bitfield = bit_sz > 0
    if bitfield:
        byte_sz = mt.size
        byte_off = bit_off // 8 // byte_sz * byte_sz
        # widen the load until it covers the whole bitfield, as libbpf does
        while bit_off + bit_sz - byte_off * 8 > byte_sz * 8:
            if byte_sz >= 8:
                raise _Fail("bitfield cannot be read with a 64-bit load")
            byte_sz *= 2
            byte_off = bit_off // 8 // byte_sz * byte_sz
    else:
        byte_sz = _resolve_size(btf, field_id)
        byte_off = bit_off // 8
        bit_sz = byte_sz * 8
    res.validate = not bitfield
    if kind == CoreReloKind.FIELD_BYTE_OFFSET:
        res.value = byte_off
        if not bitfield:
            res.size = _elem_size(btf, field_id)
            res.type_id = field_id
    elif kind == CoreReloKind.FIELD_BYTE_SIZE:
        res.value = byte_sz
    elif kind == CoreReloKind.FIELD_SIGNED:
        res.value = int((mt.kind in _ANY_ENUM and bool(mt.signed)) or _is_signed_int(mt))
        res.validate = True
    elif kind == CoreReloKind.FIELD_LSHIFT_U64:
        res.value = (64 - (bit_off + bit_sz - byte_off * 8)) & U64  # little endian
    elif kind == CoreReloKind.FIELD_RSHIFT_U64:
        res.value = 64 - bit_sz
        res.validate = True
    else:
        raise _Fail(f"unknown field relocation kind {int(kind)}")
    return res


def _type_value(kind: CoreReloKind, spec: Optional[_Spec]) -> _Res:
    """bpf_core_calc_type_relo: a missing target type gives 0, never poison."""
    res = _Res()
    if spec is None:
        return res
    if kind == CoreReloKind.TYPE_ID_TARGET:
        res.value = spec.root_id
        res.validate = False  # type ids in instructions may be renumbered by linking
    elif kind in (CoreReloKind.TYPE_EXISTS, CoreReloKind.TYPE_MATCHES):
        res.value = 1
    elif kind == CoreReloKind.TYPE_SIZE:
        res.value = _resolve_size(spec.btf, spec.root_id)
    else:
        raise _Fail(f"unexpected type relocation kind {int(kind)}")
    return res


def _enumval_value(kind: CoreReloKind, spec: Optional[_Spec]) -> _Res:
    res = _Res()
    if kind == CoreReloKind.ENUMVAL_EXISTS:
        res.value = 1 if spec is not None else 0
    elif spec is None:
        res.poison = True
    else:
        acc = spec.acc[0]
        res.value = _enum_value(_type(spec.btf, acc.type_id), acc.idx)
    return res


def _calc(kind: CoreReloKind, local: _Spec, targ: Optional[_Spec]) -> Tuple[_Res, _Res, bool]:
    """(local result, target result, bad_size_change) as bpf_core_calc_relo."""
    if kind in _FIELD_KINDS:
        lres = _field_value(kind, local)
        tres = _field_value(kind, targ)
        bad = False
        if not tres.poison and lres.size != tres.size:
            lt = _type(local.btf, lres.type_id)
            tt = _type(targ.btf, tres.type_id) if targ is not None else lt
            ptrs = lt.kind == BtfKind.PTR and tt.kind == BtfKind.PTR
            # libbpf compares the whole encoding with SIGNED, so a signed char counts as unsigned
            uints = (lt.kind == BtfKind.INT and tt.kind == BtfKind.INT
                     and lt.encoding != 1 and tt.encoding != 1)
            bad = not (ptrs or uints)
        return lres, tres, bad
    if kind in _TYPE_KINDS:
        return _type_value(kind, local), _type_value(kind, targ), False
    return _enumval_value(kind, local), _enumval_value(kind, targ), False


# ---------------------------------------------------------------------------------------------
# candidates and the driver

_NAME_INDEX: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _flavored_index(btf: "Btf") -> Dict[str, List[int]]:
    """essential name -> ids of types whose name carries a ___flavor suffix (built once per BTF).

    Types named exactly by their essential name come from btf.find(); only flavored names need
    this search of the string table."""
    try:
        return _NAME_INDEX[btf]
    except KeyError:
        pass
    index: Dict[str, List[int]] = {}
    for i, name in btf.names_containing("___"):
        ess = essential_name(name)
        if ess != name:
            index.setdefault(ess, []).append(i)
    _NAME_INDEX[btf] = index
    return index


def find_candidates(local_btf: "Btf", local_id: int, target_btf: "Btf") -> List[int]:
    """Target type ids with the local type's essential name and a compatible kind, ascending."""
    lt = _type(local_btf, local_id)
    if not lt.name:
        raise _Fail("CO-RE relocations against anonymous types are not supported")
    ess = essential_name(lt.name)
    ids = set(target_btf.find(ess)) | set(_flavored_index(target_btf).get(ess, ()))
    out = []
    for i in sorted(ids):
        t = target_btf.type(i)
        if i > 0 and t.name and _kind_compat(t, lt) and essential_name(t.name) == ess:
            out.append(i)
    return out


def _relocate_one(relo: "CoreRelo", local_btf: "Btf", target_btf: "Btf",
                  cache: Dict[int, List[int]]) -> Tuple[_Res, _Res, bool, str]:
    kind = CoreReloKind(relo.kind)
    local = _parse_spec(local_btf, relo.type_id, relo.access_str, kind)
    if kind == CoreReloKind.TYPE_ID_LOCAL:
        res = _Res(value=relo.type_id, validate=False)
        return res, _Res(value=relo.type_id), False, "local type id"
    if relo.type_id not in cache:
        cache[relo.type_id] = find_candidates(local_btf, relo.type_id, target_btf)
    cands = cache[relo.type_id]
    matched: List[int] = []
    chosen: Optional[Tuple[_Res, _Res, bool, _Spec]] = None
    for cid in cands:
        targ = _match_spec(local, target_btf, cid)
        if targ is None:
            continue
        lres, tres, bad = _calc(kind, local, targ)
        if chosen is None:
            chosen = (lres, tres, bad, targ)
        else:
            first = chosen[3]
            if targ.bit_offset != first.bit_offset:
                raise _Fail(f"candidates [{first.root_id}] and [{cid}] disagree on the field offset "
                            f"({first.bit_offset} != {targ.bit_offset} bits)")
            if tres.poison != chosen[1].poison or tres.value != chosen[1].value:
                raise _Fail(f"candidates [{first.root_id}] and [{cid}] disagree on the value "
                            f"({chosen[1].value} != {tres.value})")
        matched.append(cid)
    if matched:
        # later relocations of the same local type only consider the candidates that matched
        cache[relo.type_id] = matched
        lres, tres, bad, targ = chosen  # type: ignore[misc]
        reason = f"matched target type [{targ.root_id}] {targ.describe() if targ.acc else ''}".rstrip()
        return lres, tres, bad, reason
    lres, tres, bad = _calc(kind, local, None)
    if not cands:
        reason = f"no type named {essential_name(_type(local_btf, relo.type_id).name)!r} in target BTF"
    elif kind in _ENUMVAL_KINDS:
        reason = f"enumerator {local.acc[0].name!r} not found in any of {len(cands)} target candidate(s)"
    elif kind in _FIELD_KINDS:
        reason = f"field {local.describe()} not found in any of {len(cands)} target candidate(s)"
    else:
        reason = f"none of {len(cands)} target candidate(s) is compatible"
    return lres, tres, bad, reason


def relocate(program_name: str, relos: Sequence["CoreRelo"], local_btf: "Btf", target_btf: "Btf",
             cand_cache: Optional[Dict[int, List[int]]] = None) -> List[Fixup]:
    """Resolve every CO-RE relocation of one program against target_btf.

    Raises CoreRelocationError for relocations libbpf would refuse (bad access strings,
    ambiguous candidates, unreadable bitfields).  Pass one cand_cache dict to several calls to
    share candidate pruning across programs, as libbpf does within one object load."""
    cache: Dict[int, List[int]] = {} if cand_cache is None else cand_cache
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
            lres, tres, bad, reason = _relocate_one(relo, local_btf, target_btf, cache)
        except _Fail as exc:
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
