""".BTF.ext: per-section func_info, line_info and CO-RE relocation records.

Offsets are kept as the file has them (insn_off in bytes from the start of the
ELF section); encode_func_info/encode_line_info produce the kernel's load-time
form (insn_off in instructions from the start of the loaded program).
"""
from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from enum import IntEnum
from typing import Dict, Iterable, List, Tuple

from netbee.loader.btf import Btf
from netbee.loader.errors import BTFError

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


@dataclass
class FuncInfo:
    insn_off: int    # bytes
    type_id: int


@dataclass
class LineInfo:
    insn_off: int    # bytes
    file_name: str
    line_text: str
    line: int
    col: int
    file_name_off: int = 0   # string offsets in the object's BTF, reused at load time
    line_off: int = 0


@dataclass
class CoreRelo:
    insn_off: int    # bytes
    type_id: int
    access_str: str
    kind: CoreReloKind


@dataclass
class BtfExt:
    func_info: Dict[str, List[FuncInfo]]
    line_info: Dict[str, List[LineInfo]]
    core_relos: Dict[str, List[CoreRelo]]

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
        line_info = {}
        for sec, recs in reader.sections("line_info", li_off, li_len, 16).items():
            st = _strs([r[1] for r in recs] + [r[2] for r in recs])
            line_info[sec] = [
                LineInfo(off, st[f], st[ln], lc >> 10, lc & 0x3FF, f, ln)
                for off, f, ln, lc in recs
            ]
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

    def sections(self, what: str, off: int, length: int,
                 min_rec: int) -> Dict[str, List[Tuple[int, ...]]]:
        if length == 0:
            return {}
        body = self.body
        if off + length > len(body) or length < 4:
            raise BTFError(f".BTF.ext {what} block exceeds the section: truncated?")
        block = body[off:off + length]
        rec_size = struct.unpack_from(self.order + "I", block, 0)[0]
        if rec_size < min_rec or rec_size % 4:
            raise BTFError(f".BTF.ext {what}: bad record size {rec_size}")
        # the fields we know, then padding up to rec_size (newer compilers may add fields)
        fmt = struct.Struct(self.order + f"{min_rec // 4}I" + (f"{rec_size - min_rec}x" if rec_size > min_rec else ""))
        pos = 4
        out: Dict[str, List[Tuple[int, ...]]] = {}
        while pos < length:
            if pos + 8 > length:
                raise BTFError(f".BTF.ext {what}: truncated section header")
            name_off, num = struct.unpack_from(self.order + "2I", block, pos)
            pos += 8
            if num == 0 or num * rec_size > length - pos:
                raise BTFError(f".BTF.ext {what}: bad record count {num}")
            name = self.btf.string(name_off)
            end = pos + num * rec_size
            out.setdefault(name, []).extend(fmt.iter_unpack(block[pos:end]))
            pos = end
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
    out = bytearray()
    for r in records:
        line_col = ((r.line << 10) | (r.col & 0x3FF)) & 0xFFFFFFFF
        out += struct.pack("=IIII", r.insn_off // 8 + insn_base, r.file_name_off, r.line_off, line_col)
    return bytes(out)


FUNC_INFO_REC_SIZE = 8
LINE_INFO_REC_SIZE = 16
