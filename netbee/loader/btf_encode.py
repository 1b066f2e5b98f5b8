"""Encoding BTF types back to the kernel's binary layout (u32 words + a string table)."""
from __future__ import annotations

from typing import Dict, List

from netbee.loader.btf_types import BtfKind, BtfType
from netbee.loader.errors import BTFError


class StringTable:
    """Keeps an existing string section byte for byte (so every old offset stays
    valid, e.g. those in .BTF.ext) and appends new strings after it."""

    def __init__(self, initial: bytes, base_len: int) -> None:
        self.data = bytearray(initial if initial else b"\0")
        self.base_len = base_len
        self.index: Dict[str, int] = {"": 0}

    def add(self, text: str) -> int:
        off = self.index.get(text)
        if off is not None:
            return off
        raw = text.encode()
        pos = self.data.find(raw + b"\0")
        if pos < 0 or b"\0" in raw:
            pos = len(self.data)
            self.data += raw + b"\0"
        off = self.base_len + pos
        self.index[text] = off
        return off


def info_word(kind: int, vlen: int = 0, kflag: bool = False) -> int:
    if vlen > 0xFFFF:
        raise BTFError(f"too many members ({vlen}) for one BTF type")
    return (int(kflag) << 31) | (kind << 24) | vlen


def encode_type(t: BtfType, st: StringTable) -> List[int]:
    """One type as u32 words."""
    k = t.kind
    name = st.add(t.name)
    if k == BtfKind.INT:
        return [name, info_word(k), t.size, (t.encoding << 24) | (t.bits_offset << 16) | t.nr_bits]
    if k in (BtfKind.PTR, BtfKind.VOLATILE, BtfKind.CONST, BtfKind.RESTRICT, BtfKind.TYPEDEF):
        return [name, info_word(k), t.type]
    if k == BtfKind.ARRAY:
        return [name, info_word(k), 0, t.type, t.index_type, t.nelems]
    if k in (BtfKind.STRUCT, BtfKind.UNION):
        kflag = any(m.bitfield_size for m in t.members)
        words = [name, info_word(k, len(t.members), kflag), t.size]
        for m in t.members:
            off = (m.bitfield_size << 24) | m.bit_offset if kflag else m.bit_offset
            words += [st.add(m.name), m.type, off]
        return words
    if k == BtfKind.ENUM:
        words = [name, info_word(k, len(t.values), t.signed), t.size]
        for v in t.values:
            words += [st.add(v.name), v.value & 0xFFFFFFFF]
        return words
    if k == BtfKind.ENUM64:
        words = [name, info_word(k, len(t.values), t.signed), t.size]
        for v in t.values:
            u = v.value & 0xFFFFFFFFFFFFFFFF
            words += [st.add(v.name), u & 0xFFFFFFFF, u >> 32]
        return words
    if k == BtfKind.FWD:
        return [name, info_word(k, 0, t.is_union), 0]
    if k == BtfKind.TYPE_TAG:
        return [name, info_word(k, 0, t.kflag), t.type]
    if k == BtfKind.FUNC:
        return [name, info_word(k, t.linkage), t.type]
    if k == BtfKind.FUNC_PROTO:
        words = [name, info_word(k, len(t.params)), t.ret_type]
        for p in t.params:
            words += [st.add(p.name), p.type]
        return words
    if k == BtfKind.VAR:
        return [name, info_word(k), t.type, t.linkage]
    if k == BtfKind.DATASEC:
        words = [name, info_word(k, len(t.vars)), t.size]
        for v in t.vars:
            words += [v.type, v.offset, v.size]
        return words
    if k == BtfKind.FLOAT:
        return [name, info_word(k), t.size]
    if k == BtfKind.DECL_TAG:
        return [name, info_word(k, 0, t.kflag), t.type, t.component_idx & 0xFFFFFFFF]
    raise BTFError(f"cannot encode BTF kind {k!r}")
