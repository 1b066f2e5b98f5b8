"""tests/vm/bzimage.py: payload location, decompression and .BTF extraction on synthetic bzImages."""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from tests.vm import bzimage

ROOT = Path(__file__).resolve().parents[2]
OBJECT = ROOT / "tests" / "bpf" / "elf_basic.bpf.o"  # any ELF with a .BTF section stands in for vmlinux


def make_bzimage(compressed: bytes, setup_sects: int = 3, version: int = 0x20F) -> bytes:
    header = bytearray((setup_sects + 1) * 512)
    header[0x1F1] = setup_sects
    header[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", header, 0x206, version)
    lead = b"\x90" * 100  # the decompressor stub sits before the payload
    struct.pack_into("<II", header, 0x248, len(lead), len(compressed))
    return bytes(header) + lead + compressed + struct.pack("<I", 12345)  # trailing size word


@pytest.mark.parametrize("compress", [
    lambda d: lzma.compress(d, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32),
    gzip.compress, bz2.compress], ids=["xz", "gzip", "bzip2"])
def test_btf_extracted_matches_the_elf_section(compress) -> None:  # type: ignore[no-untyped-def]
    elf_bytes = OBJECT.read_bytes()
    want = ELFFile(io.BytesIO(elf_bytes)).get_section_by_name(".BTF").data()
    assert bzimage.btf_from_bzimage(make_bzimage(compress(elf_bytes))) == want


def test_not_a_bzimage_rejected() -> None:
    with pytest.raises(bzimage.BzImageError):
        bzimage.payload(b"\0" * 4096)


def test_old_boot_protocol_rejected() -> None:
    with pytest.raises(bzimage.BzImageError):
        bzimage.payload(make_bzimage(b"xx", version=0x207))


def test_unknown_compression_rejected() -> None:
    with pytest.raises(bzimage.BzImageError):
        bzimage.vmlinux(make_bzimage(b"LZ4?" + b"\0" * 64))
