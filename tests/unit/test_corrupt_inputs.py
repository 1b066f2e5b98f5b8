"""Malformed input: truncated or corrupted BTF, .BTF.ext and ELF objects must raise only
the documented loader errors (BTFError, ObjectFileError), quickly and with bounded memory."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netbee.loader.btf import Btf
from netbee.loader.btf_ext import BtfExt
from netbee.loader.elf import ObjectSpec
from netbee.loader.errors import BTFError, ObjectFileError

ROOT = Path(__file__).resolve().parents[2]
OBJ = (ROOT / "tests/bpf/elf_basic.bpf.o").read_bytes()
KINDS = (ROOT / "tests/data/kinds.btf").read_bytes()
with open(ROOT / "tests/bpf/elf_basic.bpf.o", "rb") as _f:
    _elf = ELFFile(_f)
    BASIC_BTF = _elf.get_section_by_name(".BTF").data()
    BASIC_EXT = _elf.get_section_by_name(".BTF.ext").data()

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# CPU seconds for one parse of a corrupt input (this process's CPU time: wall time on the shared CI
# cores measures the other tenants; hypothesis' wall-clock deadline is off for the same reason).
TIME_LIMIT = 2.0


def _exercise_btf(btf: Btf) -> None:
    """Touch everything lazily decoded, so latent corruption surfaces now."""
    for tid in range(len(btf)):
        t = btf.type(tid)
        try:
            btf.sizeof(tid)
            btf.resolve(tid)
        except BTFError:
            pass
        if t.name:
            btf.find(t.name)
    Btf.parse(btf.to_bytes())


def _btf(data: bytes) -> None:
    t0 = time.process_time()
    try:
        _exercise_btf(Btf.parse(data))
    except BTFError as e:
        assert str(e)
    assert time.process_time() - t0 < TIME_LIMIT


def _ext(data: bytes) -> None:
    btf = Btf.parse(BASIC_BTF)
    t0 = time.process_time()
    try:
        BtfExt.parse(data, btf)
    except BTFError as e:
        assert str(e)
    assert time.process_time() - t0 < TIME_LIMIT


def _obj(data: bytes) -> None:
    t0 = time.process_time()
    try:
        spec = ObjectSpec.from_bytes(data, what="corrupt.o")
        if spec.btf is not None:
            _exercise_btf(spec.btf)
    except (ObjectFileError, BTFError) as e:
        assert str(e)
    assert time.process_time() - t0 < TIME_LIMIT


def _flip(data: bytes, flips) -> bytes:
    b = bytearray(data)
    for pos, val in flips:
        b[pos % len(b)] = val
    return bytes(b)


FLIPS = st.lists(st.tuples(st.integers(min_value=0, max_value=1 << 20), st.integers(0, 255)),
                 min_size=1, max_size=8)


@pytest.mark.parametrize("blob", [KINDS, BASIC_BTF], ids=["kinds", "basic"])
def test_btf_every_truncation(blob):
    for n in range(0, len(blob)):
        if n % 3 == 0 or n < 64:
            _btf(blob[:n])


@SETTINGS
@given(FLIPS)
def test_btf_byte_flips(flips):
    _btf(_flip(KINDS, flips))


@SETTINGS
@given(st.integers(min_value=0, max_value=24), st.integers(0, 0xFFFFFFFF))
def test_btf_header_fields(word, value):
    b = bytearray(KINDS)
    b[word:word + 4] = value.to_bytes(4, "little")
    _btf(bytes(b))


def test_ext_every_truncation():
    for n in range(len(BASIC_EXT)):
        _ext(BASIC_EXT[:n])


@SETTINGS
@given(FLIPS)
def test_ext_byte_flips(flips):
    _ext(_flip(BASIC_EXT, flips))


def test_obj_truncations():
    for n in list(range(0, 128)) + list(range(128, len(OBJ), 97)):
        _obj(OBJ[:n])


@SETTINGS
@given(FLIPS)
def test_obj_byte_flips(flips):
    _obj(_flip(OBJ, flips))


# the ELF header and section header table are where one flip does the most damage
_SHOFF = int.from_bytes(OBJ[0x28:0x30], "little")


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255)), min_size=1, max_size=4))
def test_obj_elf_header_flips(flips):
    _obj(_flip(OBJ, flips))


@SETTINGS
@given(st.lists(st.tuples(st.integers(_SHOFF, len(OBJ) - 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_obj_section_header_flips(flips):
    _obj(_flip(OBJ, flips))


def test_valid_inputs_still_parse():
    # the exercising helpers themselves accept the originals
    _exercise_btf(Btf.parse(KINDS))
    BtfExt.parse(BASIC_EXT, Btf.parse(BASIC_BTF))
    assert ObjectSpec.from_bytes(OBJ).programs


def _section_header(name: str) -> tuple:
    """(file offset of the section header, its sh_offset) of the basic object's section `name`."""
    with open(ROOT / "tests/bpf/elf_basic.bpf.o", "rb") as f:
        elf = ELFFile(f)
        for idx, sec in enumerate(elf.iter_sections()):
            if sec.name == name:
                return _SHOFF + idx * elf["e_shentsize"], sec["sh_offset"]
    raise AssertionError(f"elf_basic.bpf.o has no {name}")


def _patched(at: int, value: int, size: int) -> bytes:
    b = bytearray(OBJ)
    b[at:at + size] = value.to_bytes(size, "little")
    return bytes(b)


def _refused(data: bytes, words: str) -> None:
    with pytest.raises(ObjectFileError, match=words):
        ObjectSpec.from_bytes(data, what="corrupt.o")


# Symbol and relocation tables are decoded in bulk (struct), not through pyelftools: each check
# the bulk reader makes is exercised here by name (Elf64_Shdr: sh_link at 40, sh_size at 32).
def test_symbol_name_outside_the_string_table():
    _, symtab = _section_header(".symtab")
    _refused(_patched(symtab + 24, 0x7FFFFFFF, 4), "name lies outside its string table")


def test_relocation_table_of_partial_entries():
    hdr, _ = _section_header(".rel.text")
    size = int.from_bytes(OBJ[hdr + 32:hdr + 40], "little")
    _refused(_patched(hdr + 32, size - 3, 8), "not a whole number of relocations")


def test_relocation_against_a_missing_symbol():
    _, rel = _section_header(".rel.text")
    _refused(_patched(rel + 12, 0xFFFFFF, 4), "names symbol 16777215, which does not exist")
