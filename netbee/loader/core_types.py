"""CO-RE type rules: libbpf's BTF walks and its three notions of "compatible" (relo_core.c).

types_are_compat: TYPE_* relocations; fields_are_compat: a field found by name;
types_match: TYPE_MATCHES.  Errors are CoreFail, which core.py turns into CoreRelocationError
with the program, instruction and access string attached."""
from __future__ import annotations

from typing import TYPE_CHECKING, Tuple

from netbee.loader.btf import BtfKind
from netbee.loader.errors import BTFError, CoreRelocationError

if TYPE_CHECKING:
    from netbee.loader.btf import Btf

MAX_DEPTH = 32  # libbpf's recursion bound for type comparisons and size resolution
U64 = (1 << 64) - 1
MODS = frozenset({BtfKind.TYPEDEF, BtfKind.VOLATILE, BtfKind.CONST, BtfKind.RESTRICT, BtfKind.TYPE_TAG})
COMPOSITE = frozenset({BtfKind.STRUCT, BtfKind.UNION})
ANY_ENUM = frozenset({BtfKind.ENUM, BtfKind.ENUM64})


class CoreFail(CoreRelocationError):
    """A relocation that cannot be computed; relocate() re-raises it as CoreRelocationError with
    the program, instruction, type and access string."""


def type_at(btf: "Btf", type_id: int):
    try:
        return btf.type(type_id)
    except (IndexError, KeyError, BTFError) as exc:
        raise CoreFail(f"type id {type_id} not in BTF") from exc


def skip_mods(btf: "Btf", type_id: int) -> Tuple[int, object]:
    """Skip typedefs and modifiers (btf_type_skip_modifiers)."""
    for _ in range(MAX_DEPTH * 8):
        t = type_at(btf, type_id)
        if t.kind not in MODS:
            return type_id, t
        type_id = t.type
    raise CoreFail(f"modifier loop at type id {type_id}")


def resolve_size(btf: "Btf", type_id: int) -> int:
    """Size in bytes of a type as btf__resolve_size computes it; CoreFail when it has none."""
    nelems = 1
    for _ in range(MAX_DEPTH):
        t = type_at(btf, type_id)
        k = t.kind
        if k in (BtfKind.INT, BtfKind.FLOAT, BtfKind.STRUCT, BtfKind.UNION, BtfKind.ENUM,
                 BtfKind.ENUM64, BtfKind.DATASEC):
            size = t.size
            break
        if k == BtfKind.PTR:
            size = 8
            break
        if k in MODS or k == BtfKind.VAR:
            type_id = t.type
        elif k == BtfKind.ARRAY:
            if nelems and t.nelems > 0xFFFFFFFF // nelems:
                raise CoreFail(f"array type id {type_id} too large")
            nelems *= t.nelems
            type_id = t.type
        else:
            raise CoreFail(f"type id {type_id} ({k.name}) has no size")
    else:
        raise CoreFail(f"type chain too deep at id {type_id}")
    total = nelems * size
    if total > 0xFFFFFFFF:
        raise CoreFail(f"type id {type_id} size overflows")
    return total


def essential_name(name: str) -> str:
    """Name without its `___flavor` suffix (libbpf bpf_core_essential_name_len)."""
    for i in range(len(name) - 5, -1, -1):
        if name[i] != "_" and name[i + 1:i + 4] == "___" and name[i + 4] != "_":
            return name[:i + 1]
    return name


def kind_compat(a, b) -> bool:
    return a.kind == b.kind or (a.kind in ANY_ENUM and b.kind in ANY_ENUM)


def vlen(t) -> int:
    if t.kind in COMPOSITE:
        return len(t.members)
    if t.kind in ANY_ENUM:
        return len(t.values)
    if t.kind == BtfKind.FUNC_PROTO:
        return len(t.params)
    return 0


def enum_value(t, idx: int) -> int:
    """Enumerator value widened to u64 as libbpf does (32-bit enumerators sign-extend)."""
    v = t.values[idx].value
    if t.kind == BtfKind.ENUM:
        v &= 0xFFFFFFFF
        if v & 0x80000000:
            v -= 1 << 32
    return v & U64


def is_signed_int(t) -> bool:
    return t.kind == BtfKind.INT and bool(t.encoding & 1)


# ---------------------------------------------------------------------------------------------
# type compatibility (three different rule sets, as libbpf)


def types_are_compat(lbtf: "Btf", lid: int, tbtf: "Btf", tid: int, level: int = MAX_DEPTH) -> bool:
    """Rules for TYPE_* relocations other than TYPE_MATCHES (__bpf_core_types_are_compat)."""
    if not kind_compat(type_at(lbtf, lid), type_at(tbtf, tid)):
        return False
    for _ in range(MAX_DEPTH):
        lid, lt = skip_mods(lbtf, lid)
        tid, tt = skip_mods(tbtf, tid)
        if not kind_compat(lt, tt):
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
                    raise CoreFail("function prototype nesting too deep")
                if not types_are_compat(lbtf, skip_mods(lbtf, lp.type)[0], tbtf,
                                         skip_mods(tbtf, tp.type)[0], level - 1):
                    return False
            lid, tid = skip_mods(lbtf, lt.ret_type)[0], skip_mods(tbtf, tt.ret_type)[0]
        else:
            return False
    raise CoreFail("type nesting too deep")


def fields_are_compat(lbtf: "Btf", lid: int, tbtf: "Btf", tid: int) -> bool:
    """Rules for a matched field's type (bpf_core_fields_are_compat)."""
    for _ in range(MAX_DEPTH * 8):
        lid, lt = skip_mods(lbtf, lid)
        tid, tt = skip_mods(tbtf, tid)
        if lt.kind in COMPOSITE and tt.kind in COMPOSITE:
            return True
        if not kind_compat(lt, tt):
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
    raise CoreFail("array nesting too deep")


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
                   and types_match(lbtf, lm.type, tbtf, tm.type, behind_ptr, level - 1)
                   for tm in tt.members):
            return False
    return True


def types_match(lbtf: "Btf", lid: int, tbtf: "Btf", tid: int, behind_ptr: bool = False,
                 level: int = MAX_DEPTH) -> bool:
    """TYPE_MATCHES rules (__bpf_core_types_match)."""
    if level <= 0:
        raise CoreFail("type nesting too deep for TYPE_MATCHES")
    for _ in range(MAX_DEPTH):
        lid, lt = skip_mods(lbtf, lid)
        tid, tt = skip_mods(tbtf, tid)
        if not _names_match(lt.name, tt.name):
            return False
        lk, tk = lt.kind, tt.kind
        if lk == BtfKind.UNKN:
            return lk == tk
        if lk == BtfKind.FWD:
            if behind_ptr and lk != tk:
                return (tk == BtfKind.STRUCT and not lt.is_union) or (tk == BtfKind.UNION and lt.is_union)
            return lk == tk and lt.is_union == tt.is_union
        if lk in ANY_ENUM:
            return tk in ANY_ENUM and _enums_match(lt, tt)
        if lk in COMPOSITE:
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
                if not types_match(lbtf, lp.type, tbtf, tp.type, behind_ptr, level - 1):
                    return False
            lid, tid = lt.ret_type, tt.ret_type
        else:
            return False
    raise CoreFail("type nesting too deep for TYPE_MATCHES")
