"""elf_file.py (struct) against pyelftools on every committed object: same sections, symbols and
relocations; and malformed headers fail inside the reader, which elf.py turns into
ObjectFileError."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from netbee.loader.elf import ObjectSpec
from netbee.loader.elf_file import SYMBOL_BINDS, SYMBOL_TYPES, ElfFile
from netbee.loader.errors import ObjectFileError

ROOT = Path(__file__).resolve().parents[2]
OBJECTS = sorted((ROOT / "tests/bpf").glob("*.o")) + [ROOT / "bpf/prebuilt/netbee.bpf.o"]


@pytest.mark.parametrize("path", OBJECTS, ids=lambda p: p.name)
def test_same_as_pyelftools(path):
    data = path.read_bytes()
    ours = ElfFile(data)
    with open(path, "rb") as f:
        ref = ELFFile(f)
        assert ours.machine == 247 and len(ours.sections) == ref.num_sections()
        for s, r in zip(ours.sections, ref.iter_sections()):
            assert (s.name, s.offset, s.size, s.flags, s.link, s.info, s.entsize) == (
                r.name, r["sh_offset"], r["sh_size"], r["sh_flags"], r["sh_link"], r["sh_info"], r["sh_entsize"])
            if r["sh_type"] != "SHT_NOBITS":
                assert s.data() == r.data()
            if r["sh_type"] == "SHT_SYMTAB":
                want = []
                for sym in r.iter_symbols():
                    shndx = sym["st_shndx"]
                    if not isinstance(shndx, int):
                        shndx = {"SHN_UNDEF": 0}.get(shndx, -1)
                    want.append((sym.name, sym["st_info"]["type"], sym["st_info"]["bind"], shndx,
                                 sym["st_value"], sym["st_size"]))
                assert ours.symbols(s) == want
            if r["sh_type"] == "SHT_REL":
                assert list(ours.relocations(s)) == [
                    (x["r_offset"], x["r_info_sym"], x["r_info_type"]) for x in r.iter_relocations()]
    assert set(SYMBOL_TYPES.values()) >= {"STT_FUNC", "STT_OBJECT", "STT_SECTION", "STT_NOTYPE"}
    assert set(SYMBOL_BINDS.values()) == {"STB_LOCAL", "STB_GLOBAL", "STB_WEAK"}


def test_section_table_past_the_end_is_an_object_file_error():
    data = bytearray((ROOT / "tests/bpf/elf_basic.bpf.o").read_bytes())
    struct.pack_into("<H", data, 0x3C, 0x7FFF)          # e_shnum far beyond the file
    with pytest.raises(ObjectFileError, match="past the end"):
        ObjectSpec.from_bytes(bytes(data))


def test_32_bit_and_big_endian_objects_are_refused_by_name():
    data = bytearray((ROOT / "tests/bpf/elf_basic.bpf.o").read_bytes())
    for index, value in ((4, 1), (5, 2)):
        bad = bytearray(data)
        bad[index] = value
        with pytest.raises(ObjectFileError, match="64-bit little-endian"):
            ObjectSpec.from_bytes(bytes(bad))
