"""btf_ext.py on the committed test object."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from netbee.loader.btf import Btf, BtfKind
from netbee.loader.btf_ext import (BtfExt, CoreReloKind, FuncInfo, LineInfo, encode_func_info,
                                   encode_line_info)
from netbee.loader.errors import BTFError

ROOT = Path(__file__).resolve().parents[2]
OBJ = ROOT / "tests/bpf/elf_basic.bpf.o"
SRC = ROOT / "tests/bpf/elf_basic.bpf.c"


@pytest.fixture(scope="module")
def sections():
    with open(OBJ, "rb") as f:
        elf = ELFFile(f)
        btf_raw = elf.get_section_by_name(".BTF").data()
        ext_raw = elf.get_section_by_name(".BTF.ext").data()
    return btf_raw, ext_raw


@pytest.fixture(scope="module")
def parsed(sections):
    btf = Btf.parse(sections[0])
    return btf, BtfExt.parse(sections[1], btf)


def test_func_info_per_section(parsed):
    btf, ext = parsed
    assert len(ext.func_info["tp_btf/netif_receive_skb"]) == 2
    names = {}
    for sec, recs in ext.func_info.items():
        for r in recs:
            t = btf.type(r.type_id)
            assert t.kind == BtfKind.FUNC
            names[t.name] = (sec, r.insn_off)
    assert names["tpb_one"] == ("tp_btf/netif_receive_skb", 0)
    assert names["tpb_two"][0] == "tp_btf/netif_receive_skb" and names["tpb_two"][1] > 0
    assert names["tpb_two"][1] % 8 == 0                  # bytes, as in the file
    assert {"bump", "read_len", "global_helper", "loop_cb"} <= {n for n, v in names.items() if v[0] == ".text"}
    assert names["nf"] == ("netfilter", 0)


def test_line_info_text_and_positions(parsed):
    _, ext = parsed
    src_lines = SRC.read_text().splitlines()
    total = 0
    for recs in ext.line_info.values():
        for r in recs:
            total += 1
            assert r.file_name.endswith("tests/bpf/elf_basic.bpf.c")
            assert 1 <= r.line <= len(src_lines)
            if r.line_text:
                assert r.line_text == src_lines[r.line - 1]
    assert total > 20


# scripts/build_bpf.sh (not ours) maps the compile directory to "netbee/", so clang cannot
# reopen the source and leaves every line text empty: verifier logs then show no source.
# Compiling from the repository root with -fdebug-compilation-dir=. (no prefix maps) keeps
# the text and stays reproducible. strict: this starts failing once the script is fixed.
def test_line_info_has_source_text(parsed):
    _, ext = parsed
    src_lines = SRC.read_text().splitlines()
    texts = [(r.line, r.line_text) for recs in ext.line_info.values() for r in recs]
    assert any(t for _, t in texts), "no source text in line_info"
    assert all(t == src_lines[n - 1] for n, t in texts if t)


def test_core_relos(parsed):
    btf, ext = parsed
    relos = ext.core_relos[".text"]
    kinds = {r.kind for r in relos}
    assert {CoreReloKind.FIELD_EXISTS, CoreReloKind.FIELD_BYTE_OFFSET} <= kinds
    for r in relos:
        assert btf.type(r.type_id).name == "sk_buff___elf"
        assert r.access_str in ("0:0", "0:1")


def test_encode_func_and_line_info():
    fi = [FuncInfo(0, 5), FuncInfo(64, 9)]
    raw = encode_func_info(fi, insn_base=10)
    assert struct.unpack("=4I", raw) == (10, 5, 18, 9)
    li = [LineInfo(16, "f.c", "x", 12, 3, 7, 11)]
    raw = encode_line_info(li, insn_base=1)
    assert struct.unpack("=4I", raw) == (3, 7, 11, (12 << 10) | 3)


def _patch(data: bytes, off: int, value: int) -> bytes:
    b = bytearray(data)
    struct.pack_into("<I", b, off, value)
    return bytes(b)


def test_malformed(sections):
    btf = Btf.parse(sections[0])
    ext = sections[1]
    with pytest.raises(BTFError, match="too short"):
        BtfExt.parse(ext[:4], btf)
    with pytest.raises(BTFError, match="magic"):
        BtfExt.parse(b"\0\0" + ext[2:], btf)
    with pytest.raises(BTFError, match="header length"):
        BtfExt.parse(_patch(ext, 4, 10_000_000), btf)
    with pytest.raises(BTFError, match="exceeds"):
        BtfExt.parse(_patch(ext, 12, 10_000_000), btf)           # func_info_len
    hdr_len = struct.unpack_from("<I", ext, 4)[0]
    fi_off = struct.unpack_from("<I", ext, 8)[0]
    with pytest.raises(BTFError, match="record size"):
        BtfExt.parse(_patch(ext, hdr_len + fi_off, 3), btf)
    with pytest.raises(BTFError, match="record count"):
        BtfExt.parse(_patch(ext, hdr_len + fi_off + 8, 0xFFFFFFF), btf)
    with pytest.raises(BTFError, match="string offset"):
        BtfExt.parse(_patch(ext, hdr_len + fi_off + 4, 0xFFFFFF), btf)


def test_raw_line_info_blob_equals_the_decoded_records_encoding(parsed):
    """LineInfos.blob() works on the raw words; it must equal encoding the decoded records."""
    _, ext = parsed
    assert max(len(v) for v in ext.line_info.values()) >= 3
    for recs in ext.line_info.values():
        decoded = list(recs)
        assert all(isinstance(r, LineInfo) for r in decoded)
        for base in (0, 7):
            assert recs.blob(base) == encode_line_info(decoded, base)
        if len(decoded) < 3:
            continue
        lo, hi = decoded[1].insn_off, decoded[-1].insn_off
        part = recs.between(lo, hi, shift=80)
        assert [(r.insn_off, r.line, r.col, r.file_name) for r in part] == [
            (r.insn_off + 80, r.line, r.col, r.file_name) for r in decoded if lo <= r.insn_off < hi]
