""".BTF.ext: per-section func_info, line_info and CO-RE relocation records.

Offsets are kept as the file has them (insn_off in bytes from the start of the
ELF section); encode_func_info/encode_line_info produce the kernel's load-time
form (insn_off in instructions from the start of the loaded program).
"""
from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from enum import IntEnum
from typing import Dict, Iterable, List, Optional, Tuple, Union

from netbee.loader.btf import Btf
from netbee.loader.errors import BTFError
from netbee.loader.record import Record

BTF_EXT_MAGIC = 0xEB9F
_MIN_HEADER = 24          # magic..line_info_len
_CORE_HEADER = 32         # + core_relo_off, core_relo_len


class CoreReloKind(IntEnum):
    """The kernel uapi enum bpf_core_relo_kind."""
    FIELD_BYTE_OFFSET = 0
    FIELD_BYTE_SIZE = 1
    FIELD_EXISTS = 2
    FIELD_SIGNED = 3
    FIELD_LSHIFT_U64 = 4
    FIELD_RSHIFT_U64 = 5
    TYPE_ID_LOCAL = 6
    TYPE_ID_TARGET = 7
    TYPE_EXISTS = 8
    TYPE_SIZE = 9
    ENUMVAL_EXISTS = 10
    ENUMVAL_VALUE = 11
    TYPE_MATCHES = 12


class FuncInfo(Record):
    __slots__ = ("insn_off", "type_id")

    def __init__(self, insn_off: int, type_id: int) -> None:
        self.insn_off = insn_off   # bytes
        self.type_id = type_id


class LineInfo(Record):
    __slots__ = ("insn_off", "file_name", "line_text", "line", "col", "file_name_off", "line_off")

    def __init__(self, insn_off: int,
                 file_name: str, line_text: str, line: int, col: int, file_name_off: int = 0,
                 line_off: int = 0) -> None:
        self.insn_off = insn_off   # bytes
        self.file_name = file_name
        self.line_text = line_text
        self.line = line
        self.col = col
        self.file_name_off = file_name_off   # string offsets in the object's BTF, reused at load time
        self.line_off = line_off


class LineInfos(Sequence):
    """line_info records kept as the file has them: four u32 per record (insn_off in bytes,
    file name and line string offsets, line << 10 | column), native order.

    A big object carries tens of thousands of records and the kernel wants them in this very
    form (blob()); LineInfo objects, with their strings looked up, are built only when someone
    reads a record (a test, a tool showing C lines): loading never does.
    """

    __slots__ = ("_w", "_btf", "_keys")

    def __init__(self, words: "Optional[array[int]]" = None, btf: Optional[Btf] = None) -> None:
        self._w = words if words is not None else array("I")
        if len(self._w) % 4:
            raise ValueError("line_info words must come in fours")
        self._btf = btf
        self._keys: "Optional[Tuple[array[int], bool]]" = None   # (insn offsets, sorted?)

    def __len__(self) -> int:
        return len(self._w) // 4

    def __getitem__(self, i: Union[int, slice]):  # type: ignore[override]
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step != 1:
                return [self[k] for k in range(start, stop, step)]
            return LineInfos(self._w[4 * start:4 * max(start, stop)], self._btf)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("line_info record index out of range")
        off, fname, ltext, lc = self._w[4 * i:4 * i + 4]
        string = self._btf.string if self._btf is not None else (lambda _o: "")
        return LineInfo(off, string(fname), string(ltext), lc >> 10, lc & 0x3FF, fname, ltext)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LineInfos):
            return self._w == other._w
        if isinstance(other, (list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"LineInfos({len(self)} records)"

    @property
    def btf(self) -> Optional[Btf]:
        return self._btf

    def insn_offsets(self) -> "array[int]":
        """insn_off (bytes) of every record, in order."""
        return self._w[0::4]

    def between(self, lo: int, hi: int, shift: int = 0) -> "LineInfos":
        """The records with lo <= insn_off < hi, their insn_off moved by shift bytes."""
        if self._keys is None:
            offs = self.insn_offsets()
            self._keys = (offs, all(offs[k] <= offs[k + 1] for k in range(len(offs) - 1)))
        offs, is_sorted = self._keys
        if is_sorted:
            a, b = bisect_left(offs, lo), bisect_left(offs, hi)
            w = self._w[4 * a:4 * b]
        else:
            w = array("I")
            for k, off in enumerate(offs):
                if lo <= off < hi:
                    w.extend(self._w[4 * k:4 * k + 4])
        if shift and w:
            w[0::4] = array("I", [off + shift for off in w[0::4]])
        return LineInfos(w, self._btf)

    def extend(self, other: Iterable) -> None:
        """Append records: another LineInfos (its raw words) or LineInfo objects."""
        self._keys = None
        if isinstance(other, LineInfos):
            if self._btf is None:
                self._btf = other._btf
            self._w.extend(other._w)
            return
        for r in other:
            self._w.extend((r.insn_off, r.file_name_off, r.line_off,
                            ((r.line << 10) | (r.col & 0x3FF)) & 0xFFFFFFFF))

    def append(self, r: "LineInfo") -> None:
        self.extend([r])

    def blob(self, insn_base: int = 0) -> bytes:
        """struct bpf_line_info records for BPF_PROG_LOAD, straight from the raw words."""
        w = array("I", self._w)
        w[0::4] = array("I", [off // 8 + insn_base for off in self._w[0::4]])
        return w.tobytes()


class CoreRelo(Record):
    __slots__ = ("insn_off", "type_id", "access_str", "kind")

    def __init__(self, insn_off: int, type_id: int, access_str: str, kind: CoreReloKind) -> None:
        self.insn_off = insn_off   # bytes
        self.type_id = type_id
        self.access_str = access_str
        self.kind = kind


class BtfExt(Record):
    __slots__ = ("func_info", "line_info", "core_relos")

    def __init__(self, func_info: Dict[str, List[FuncInfo]],
                 line_info: Dict[str, LineInfos], core_relos: Dict[str, List[CoreRelo]]) -> None:
        self.func_info = func_info
        self.line_info = line_info
        self.core_relos = core_relos

    @classmethod
    def parse(cls, data: bytes, btf: Btf) -> "BtfExt":
        """Parse a .BTF.ext section; strings are resolved in `btf` (the object's .BTF)."""
        data = bytes(data)
        if len(data) < 8:
            raise BTFError(f".BTF.ext too short: {len(data)} bytes")
        order = "<" if sys.byteorder == "little" else ">"
        magic = struct.unpack_from(order + "H", data, 0)[0]
        if magic != BTF_EXT_MAGIC:
            if magic == 0x9FEB:
                order = ">" if order == "<" else "<"
            else:
                raise BTFError(f"bad .BTF.ext magic 0x{magic:04x}")
        if data[2] != 1:
            raise BTFError(f"unsupported .BTF.ext version {data[2]}")
        hdr_len = struct.unpack_from(order + "I", data, 4)[0]
        if hdr_len < _MIN_HEADER or hdr_len > len(data):
            raise BTFError(f"bad .BTF.ext header length {hdr_len}")
        fi_off, fi_len, li_off, li_len = struct.unpack_from(order + "4I", data, 8)
        cr_off = cr_len = 0
        if hdr_len >= _CORE_HEADER:
            cr_off, cr_len = struct.unpack_from(order + "2I", data, 24)
        body = data[hdr_len:]
        reader = _Reader(body, order, btf)
        strings: Dict[int, str] = {}

        def _strs(offs: Iterable[int]) -> Dict[int, str]:
            # line_info names the same few files and lines many times: decode each once
            for off in set(offs).difference(strings):
                strings[off] = btf.string(off)
            return strings

        func_info = {
            sec: [FuncInfo(r[0], r[1]) for r in recs]
            for sec, recs in reader.sections("func_info", fi_off, fi_len, 8).items()
        }
        line_info = {sec: LineInfos(words, btf)
                     for sec, words in reader.raw_sections("line_info", li_off, li_len, 16).items()}
        for words in (li._w for li in line_info.values()):
            # strings are looked up only when a record is read: check now that they exist
            btf.string(max(max(words[1::4]), max(words[2::4])))
        core_relos = {}
        kinds = {k.value: k for k in CoreReloKind}
        for sec, recs in reader.sections("core_relo", cr_off, cr_len, 16).items():
            st = _strs(r[2] for r in recs)
            out = []
            for off, tid, acc, k in recs:
                kind = kinds.get(k)
                if kind is None:
                    raise BTFError(f".BTF.ext core_relo in {sec!r}: unknown relocation kind {k}")
                out.append(CoreRelo(off, tid, st[acc], kind))
            core_relos[sec] = out
        return cls(func_info, line_info, core_relos)


class _Reader:
    """Walks the info blocks: u32 rec_size, then per section {sec_name_off, num_info, records}."""

    def __init__(self, body: bytes, order: str, btf: Btf) -> None:
        self.body = body
        self.order = order
        self.btf = btf

    def _blocks(self, what: str, off: int, length: int, min_rec: int):
        """(section name, records' bytes, record size) of every section of one info block."""
        if length == 0:
            return
        body = self.body
        if off + length > len(body) or length < 4:
            raise BTFError(f".BTF.ext {what} block exceeds the section: truncated?")
        block = body[off:off + length]
        rec_size = struct.unpack_from(self.order + "I", block, 0)[0]
        if rec_size < min_rec or rec_size % 4:
            raise BTFError(f".BTF.ext {what}: bad record size {rec_size}")
        pos = 4
        while pos < length:
            if pos + 8 > length:
                raise BTFError(f".BTF.ext {what}: truncated section header")
            name_off, num = struct.unpack_from(self.order + "2I", block, pos)
            pos += 8
            if num == 0 or num * rec_size > length - pos:
                raise BTFError(f".BTF.ext {what}: bad record count {num}")
            end = pos + num * rec_size
            yield self.btf.string(name_off), block[pos:end], rec_size
            pos = end

    def sections(self, what: str, off: int, length: int,
                 min_rec: int) -> Dict[str, List[Tuple[int, ...]]]:
        out: Dict[str, List[Tuple[int, ...]]] = {}
        for name, recs, rec_size in self._blocks(what, off, length, min_rec):
            # the fields we know, then padding up to rec_size (newer compilers may add fields)
            fmt = struct.Struct(self.order + f"{min_rec // 4}I" + (f"{rec_size - min_rec}x" if rec_size > min_rec else ""))
            out.setdefault(name, []).extend(fmt.iter_unpack(recs))
        return out

    def raw_sections(self, what: str, off: int, length: int, min_rec: int) -> "Dict[str, array[int]]":
        """Like sections(), as native u32 words (min_rec // 4 per record): no tuple per record."""
        out: "Dict[str, array[int]]" = {}
        for name, recs, rec_size in self._blocks(what, off, length, min_rec):
            words = array("I")
            words.frombytes(recs)
            if self.order != ("<" if sys.byteorder == "little" else ">"):
                words.byteswap()
            keep = min_rec // 4
            if rec_size != min_rec:  # newer compilers may add fields: keep the ones we know
                step = rec_size // 4
                words = array("I", [x for k in range(0, len(words), step) for x in words[k:k + keep]])
            out.setdefault(name, array("I")).extend(words)
        return out


def encode_func_info(records: Iterable[FuncInfo], insn_base: int = 0) -> bytes:
    """struct bpf_func_info records for BPF_PROG_LOAD (rec size 8): insn_off in
    instructions, `insn_base` added (where these instructions sit in the program)."""
    out = bytearray()
    for r in records:
        out += struct.pack("=II", r.insn_off // 8 + insn_base, r.type_id)
    return bytes(out)


def encode_line_info(records: Iterable[LineInfo], insn_base: int = 0) -> bytes:
    """struct bpf_line_info records for BPF_PROG_LOAD (rec size 16). String offsets
    are the object's; btf.to_bytes/sanitize keep the string section, so they stay valid."""
    if isinstance(records, LineInfos):
        return records.blob(insn_base)
    out = bytearray()
    for r in records:
        line_col = ((r.line << 10) | (r.col & 0x3FF)) & 0xFFFFFFFF
        out += struct.pack("=IIII", r.insn_off // 8 + insn_base, r.file_name_off, r.line_off, line_col)
    return bytes(out)


FUNC_INFO_REC_SIZE = 8
LINE_INFO_REC_SIZE = 16
