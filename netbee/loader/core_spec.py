"""CO-RE access specs and values: parse an access string against the local BTF, match it in
one target candidate, and compute the relocation value (bpf_core_parse_spec, bpf_core_spec_match,
bpf_core_calc_*_relo in libbpf's relo_core.c)."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, List, Optional, Tuple

from netbee.loader.btf import BtfKind
from netbee.loader.btf_ext import CoreReloKind
from netbee.loader.core_types import (ANY_ENUM, COMPOSITE, U64, CoreFail, enum_value,
                                      essential_name, fields_are_compat, is_signed_int,
                                      resolve_size, skip_mods, type_at, types_are_compat,
                                      types_match, vlen)
from netbee.loader.record import Record

if TYPE_CHECKING:
    from netbee.loader.btf import Btf

SPEC_MAX_LEN = 64  # BPF_CORE_SPEC_MAX_LEN
FIELD_KINDS = frozenset({
    CoreReloKind.FIELD_BYTE_OFFSET, CoreReloKind.FIELD_BYTE_SIZE, CoreReloKind.FIELD_EXISTS,
    CoreReloKind.FIELD_SIGNED, CoreReloKind.FIELD_LSHIFT_U64, CoreReloKind.FIELD_RSHIFT_U64,
})
TYPE_KINDS = frozenset({
    CoreReloKind.TYPE_ID_LOCAL, CoreReloKind.TYPE_ID_TARGET, CoreReloKind.TYPE_EXISTS,
    CoreReloKind.TYPE_MATCHES, CoreReloKind.TYPE_SIZE,
})
ENUMVAL_KINDS = frozenset({CoreReloKind.ENUMVAL_EXISTS, CoreReloKind.ENUMVAL_VALUE})
_ACCESS_RE = re.compile(r"\d+(?::\d+)*")


class Accessor(Record):
    __slots__ = ("type_id", "idx", "name")

    def __init__(self, type_id: int, idx: int, name: Optional[str]) -> None:
        self.type_id = type_id
        self.idx = idx
        self.name = name


class Spec(Record):
    __slots__ = ("btf", "root_id", "kind", "raw", "acc", "bit_offset")

    def __init__(self, btf: "Btf",
                 root_id: int, kind: CoreReloKind, raw: Optional[List[int]] = None,
                 acc: Optional[List[Accessor]] = None, bit_offset: int = 0) -> None:
        self.btf = btf
        self.root_id = root_id
        self.kind = kind
        self.raw = [] if raw is None else raw
        self.acc = [] if acc is None else acc
        self.bit_offset = bit_offset

    def describe(self) -> str:
        parts = []
        for i, a in enumerate(self.acc):
            if a.name is not None:
                parts.append("." + a.name)
            elif i > 0 or a.idx > 0:
                parts.append(f"[{a.idx}]")
        return "".join(parts) or "<root>"


def _is_flex_array(btf: "Btf", acc: Accessor, arr) -> bool:
    """A zero-length array that is the last member of its struct may be indexed past its end."""
    if acc.name is None or arr.nelems > 0:
        return False
    return acc.idx == vlen(type_at(btf, acc.type_id)) - 1


def parse_spec(btf: "Btf", type_id: int, access: str, kind: CoreReloKind) -> Spec:
    """The local spec of a relocation (bpf_core_parse_spec)."""
    spec = Spec(btf, type_id, kind)
    if kind in TYPE_KINDS:
        if access != "0":
            raise CoreFail("type relocation access string must be '0'")
        return spec
    if not _ACCESS_RE.fullmatch(access):
        raise CoreFail("malformed access string")
    spec.raw = [int(x) for x in access.split(":")]
    if len(spec.raw) > SPEC_MAX_LEN:
        raise CoreFail("access string too long")
    tid, t = skip_mods(btf, type_id)
    idx = spec.raw[0]
    spec.acc.append(Accessor(tid, idx, None))
    if kind in ENUMVAL_KINDS:
        if t.kind not in ANY_ENUM or len(spec.raw) > 1 or idx >= len(t.values):
            raise CoreFail("enum value relocation does not name an enumerator")
        spec.acc[0].name = t.values[idx].name
        return spec
    if kind not in FIELD_KINDS:
        raise CoreFail(f"unknown relocation kind {int(kind)}")
    spec.bit_offset = idx * resolve_size(btf, tid) * 8
    for idx in spec.raw[1:]:
        tid, t = skip_mods(btf, tid)
        if t.kind in COMPOSITE:
            if idx >= len(t.members):
                raise CoreFail(f"member index {idx} out of range")
            m = t.members[idx]
            spec.bit_offset += m.bit_offset
            if m.name:
                spec.acc.append(Accessor(tid, idx, m.name))
            tid = m.type
        elif t.kind == BtfKind.ARRAY:
            flex = _is_flex_array(btf, spec.acc[-1], t)
            tid, _ = skip_mods(btf, t.type)
            if not flex and idx >= t.nelems:
                raise CoreFail(f"array index {idx} out of bounds")
            spec.acc.append(Accessor(tid, idx, None))
            spec.bit_offset += idx * resolve_size(btf, tid) * 8
        else:
            raise CoreFail(f"access step {idx} into type id {tid} of kind {t.kind.name}")
    return spec


def _match_member(lbtf: "Btf", lacc: Accessor, tbtf: "Btf", tid: int, spec: Spec) -> Optional[int]:
    """Find lacc's field in target composite tid, descending into anonymous members.

    Returns the matched member's type id, or None.  Pushes onto spec on success."""
    tid, tt = skip_mods(tbtf, tid)
    if tt.kind not in COMPOSITE:
        return None
    lmember = type_at(lbtf, lacc.type_id).members[lacc.idx]
    for i, m in enumerate(tt.members):
        if len(spec.raw) == SPEC_MAX_LEN:
            raise CoreFail("target struct nesting too deep")
        spec.bit_offset += m.bit_offset
        spec.raw.append(i)
        if not m.name:
            found = _match_member(lbtf, lacc, tbtf, m.type, spec)
            if found is not None:
                return found
        elif m.name == lmember.name:
            if fields_are_compat(lbtf, lmember.type, tbtf, m.type):
                spec.acc.append(Accessor(tid, i, m.name))
                return m.type
            # libbpf stops at the first same-named member, compatible or not
            return None
        spec.bit_offset -= m.bit_offset
        spec.raw.pop()
    return None


def match_spec(local: Spec, tbtf: "Btf", tid: int) -> Optional[Spec]:
    """Match the local spec against one candidate (bpf_core_spec_match); None if no match."""
    targ = Spec(tbtf, tid, local.kind)
    if local.kind in TYPE_KINDS:
        if local.kind == CoreReloKind.TYPE_MATCHES:
            ok = types_match(local.btf, local.root_id, tbtf, tid)
        else:
            ok = types_are_compat(local.btf, local.root_id, tbtf, tid)
        return targ if ok else None
    lacc0 = local.acc[0]
    if local.kind in ENUMVAL_KINDS:
        tid, tt = skip_mods(tbtf, tid)
        if tt.kind not in ANY_ENUM:
            return None
        want = essential_name(lacc0.name or "")
        for i, v in enumerate(tt.values):
            if essential_name(v.name) == want:
                targ.acc.append(Accessor(tid, i, v.name))
                targ.raw.append(i)
                return targ
        return None
    for i, lacc in enumerate(local.acc):
        tid, tt = skip_mods(tbtf, tid)
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
            tid, _ = skip_mods(tbtf, tt.type)
        if len(targ.raw) == SPEC_MAX_LEN:
            raise CoreFail("target nesting too deep")
        targ.acc.append(Accessor(tid, lacc.idx, None))
        targ.raw.append(lacc.idx)
        targ.bit_offset += lacc.idx * resolve_size(tbtf, tid) * 8
    return targ


# ---------------------------------------------------------------------------------------------
# values


class Value(Record):
    __slots__ = ("value", "size", "type_id", "validate", "poison")

    def __init__(self, value: int = 0,
                 size: int = 0, type_id: int = 0, validate: bool = True, poison: bool = False) -> None:
        self.value = value
        self.size = size   # memory size of the accessed field, for FIELD_BYTE_OFFSET only
        self.type_id = type_id
        self.validate = validate
        self.poison = poison


def _elem_size(btf: "Btf", type_id: int) -> int:
    """Size of the innermost element: loads of an array field read one element."""
    tid, t = skip_mods(btf, type_id)
    while t.kind == BtfKind.ARRAY:
        tid, t = skip_mods(btf, t.type)
    return resolve_size(btf, tid)


def _field_value(kind: CoreReloKind, spec: Optional[Spec]) -> Value:
    """bpf_core_calc_field_relo; poison when the field is missing (except FIELD_EXISTS)."""
    res = Value()
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
            res.value = resolve_size(btf, acc.type_id)
        else:
            raise CoreFail(f"{kind.name} cannot be applied to an array element")
        return res
    m = type_at(btf, acc.type_id).members[acc.idx]
    field_id, mt = skip_mods(btf, m.type)
    bit_off = spec.bit_offset
    bit_sz = m.bitfield_size
    bitfield = bit_sz > 0
    if bitfield:
        byte_sz = mt.size
        byte_off = bit_off // 8 // byte_sz * byte_sz
        # widen the load until it covers the whole bitfield, as libbpf does
        while bit_off + bit_sz - byte_off * 8 > byte_sz * 8:
            if byte_sz >= 8:
                raise CoreFail("bitfield cannot be read with a 64-bit load")
            byte_sz *= 2
            byte_off = bit_off // 8 // byte_sz * byte_sz
    else:
        byte_sz = resolve_size(btf, field_id)
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
        res.value = int((mt.kind in ANY_ENUM and bool(mt.signed)) or is_signed_int(mt))
        res.validate = True
    elif kind == CoreReloKind.FIELD_LSHIFT_U64:
        res.value = (64 - (bit_off + bit_sz - byte_off * 8)) & U64  # little endian
    elif kind == CoreReloKind.FIELD_RSHIFT_U64:
        res.value = 64 - bit_sz
        res.validate = True
    else:
        raise CoreFail(f"unknown field relocation kind {int(kind)}")
    return res


def _type_value(kind: CoreReloKind, spec: Optional[Spec]) -> Value:
    """bpf_core_calc_type_relo: a missing target type gives 0, never poison."""
    res = Value()
    if spec is None:
        return res
    if kind == CoreReloKind.TYPE_ID_TARGET:
        res.value = spec.root_id
        res.validate = False  # type ids in instructions may be renumbered by linking
    elif kind in (CoreReloKind.TYPE_EXISTS, CoreReloKind.TYPE_MATCHES):
        res.value = 1
    elif kind == CoreReloKind.TYPE_SIZE:
        res.value = resolve_size(spec.btf, spec.root_id)
    else:
        raise CoreFail(f"unexpected type relocation kind {int(kind)}")
    return res


def _enumval_value(kind: CoreReloKind, spec: Optional[Spec]) -> Value:
    res = Value()
    if kind == CoreReloKind.ENUMVAL_EXISTS:
        res.value = 1 if spec is not None else 0
    elif spec is None:
        res.poison = True
    else:
        acc = spec.acc[0]
        res.value = enum_value(type_at(spec.btf, acc.type_id), acc.idx)
    return res


def compute(kind: CoreReloKind, local: Spec, targ: Optional[Spec]) -> Tuple[Value, Value, bool]:
    """(local result, target result, bad_size_change) as bpf_core_calc_relo."""
    if kind in FIELD_KINDS:
        lres = _field_value(kind, local)
        tres = _field_value(kind, targ)
        bad = False
        if not tres.poison and lres.size != tres.size:
            lt = type_at(local.btf, lres.type_id)
            tt = type_at(targ.btf, tres.type_id) if targ is not None else lt
            ptrs = lt.kind == BtfKind.PTR and tt.kind == BtfKind.PTR
            # libbpf compares the whole encoding with SIGNED, so a signed char counts as unsigned
            uints = (lt.kind == BtfKind.INT and tt.kind == BtfKind.INT
                     and lt.encoding != 1 and tt.encoding != 1)
            bad = not (ptrs or uints)
        return lres, tres, bad
    if kind in TYPE_KINDS:
        return _type_value(kind, local), _type_value(kind, targ), False
    return _enumval_value(kind, local), _enumval_value(kind, targ), False
