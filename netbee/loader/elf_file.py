"""The ELF64 container of a BPF object: section headers, symbols, relocations. [pure]

Only what elf.py needs, with struct: pyelftools parsed the same through construct, one field
at a time, and its import alone cost ~12 ms and ~2 MB at every start. Malformed input raises
ValueError/struct.error/IndexError; elf.py turns every failure into ObjectFileError at its one
boundary.
"""
from __future__ import annotations

import struct
from typing import Iterator, List, Tuple

SHT_NULL = 0
SHT_PROGBITS = 1
SHT_SYMTAB = 2
SHT_NOBITS = 8
SHT_REL = 9
SHN_LORESERVE = 0xFF00
SHN_XINDEX = 0xFFFF

_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
_SECTION = struct.Struct("<IIQQQQIIQQ")
_SYMBOL = struct.Struct("<IBBHQQ")
_REL = struct.Struct("<QQ")

# pyelftools' names, which elf.py's messages and checks use
SYMBOL_TYPES = {0: "STT_NOTYPE", 1: "STT_OBJECT", 2: "STT_FUNC", 3: "STT_SECTION", 4: "STT_FILE",
                5: "STT_COMMON", 6: "STT_TLS"}
SYMBOL_BINDS = {0: "STB_LOCAL", 1: "STB_GLOBAL", 2: "STB_WEAK"}

Symbol = Tuple[str, str, str, int, int, int]   # name, type, bind, section index (0 undefined, -1 special), value, size


class Section:
    """One section header; data() is its bytes in the file."""

    __slots__ = ("index", "name", "type", "flags", "offset", "size", "link", "info", "entsize", "_data",
                 "_name_off")

    def __init__(self, index: int, fields: tuple, data: bytes) -> None:
        self.index = index
        self.name = ""
        (self._name_off, self.type, self.flags, _addr, self.offset, self.size, self.link, self.info,
         _align, self.entsize) = fields
        self._data = data   # the file's bytes, not the ElfFile: no reference cycle to wait for the GC

    def data(self) -> bytes:
        if self.type == SHT_NOBITS:
            return b""
        return self._data[self.offset:self.offset + self.size]


class ElfFile:
    """Header checks, then every section header and its name."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        ident = data[:16]
        if len(ident) < 16 or ident[:4] != b"\x7fELF":
            raise ValueError("not an ELF file")
        self.elfclass = 64 if ident[4] == 2 else 32
        self.little_endian = ident[5] == 1
        self.sections: List[Section] = []
        self.machine = 0
        if self.elfclass != 64 or not self.little_endian:
            return   # the caller refuses these with its own message
        (_ident, _type, self.machine, _version, _entry, _phoff, shoff, _flags, _ehsize, _phentsize,
         _phnum, shentsize, shnum, shstrndx) = _HEADER.unpack_from(data, 0)
        if not shoff:
            return
        if shentsize != _SECTION.size:
            raise ValueError(f"bad section header size {shentsize}")
        first = _SECTION.unpack_from(data, shoff)
        if shnum == 0:
            shnum = first[5]       # extended numbering: the count is in section 0's sh_size
        if shstrndx == SHN_XINDEX:
            shstrndx = first[6]    # ... and the name table's index in its sh_link
        end = shoff + shnum * _SECTION.size
        if end > len(data):
            raise ValueError(f"{shnum} section headers run past the end of the file")
        self.sections = [Section(i, f, data) for i, f in enumerate(_SECTION.iter_unpack(data[shoff:end]))]
        if self.sections and shstrndx:
            names = self.sections[shstrndx].data()
            for s in self.sections:
                s.name = _cstr(names, s._name_off)

    def symbols(self, symtab: Section) -> List[Symbol]:
        strings = self.sections[symtab.link].data()
        raw = symtab.data()
        out: List[Symbol] = []
        for name, info, _other, shndx, value, size in _SYMBOL.iter_unpack(raw[:len(raw) - len(raw) % _SYMBOL.size]):
            if shndx >= SHN_LORESERVE:
                shndx = -1
            out.append((_cstr(strings, name), SYMBOL_TYPES.get(info & 0xF, f"STT_{info & 0xF}"),
                        SYMBOL_BINDS.get(info >> 4, f"STB_{info >> 4}"), shndx, value, size))
        return out

    def relocations(self, sec: Section) -> Iterator[Tuple[int, int, int]]:
        """(r_offset, symbol index, relocation type) of an SHT_REL section."""
        raw = sec.data()
        for off, info in _REL.iter_unpack(raw[:len(raw) - len(raw) % _REL.size]):
            yield off, info >> 32, info & 0xFFFFFFFF


def _cstr(table: bytes, off: int) -> str:
    if off >= len(table) and off:
        raise ValueError(f"string offset {off} outside its table")
    end = table.find(b"\0", off)
    return table[off:end if end >= 0 else len(table)].decode("utf-8", "replace")
