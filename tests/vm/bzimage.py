"""Take the vmlinux out of an x86 bzImage and read its .BTF section.

The boot protocol header says where the compressed payload sits (payload_offset/payload_length,
relative to the protected-mode code after the setup sectors). Debian 6.1 compresses with xz and
6.12 with zstd; Python's standard library has no zstd before 3.14, so that one goes through the
`zstd` program (package zstd) unless a zstd module is importable.
"""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import shutil
import struct
import subprocess

from elftools.elf.elffile import ELFFile

MAGIC_XZ = b"\xfd7zXZ\x00"
MAGIC_ZSTD = b"\x28\xb5\x2f\xfd"
MAGIC_GZIP = b"\x1f\x8b"
MAGIC_BZ2 = b"BZh"


class BzImageError(ValueError):
    pass


def payload(image: bytes) -> bytes:
    """The compressed kernel inside a bzImage (boot protocol >= 2.08)."""
    if image[0x202:0x206] != b"HdrS":
        raise BzImageError("not a bzImage (no HdrS boot header)")
    version = struct.unpack_from("<H", image, 0x206)[0]
    if version < 0x208:
        raise BzImageError(f"boot protocol {version:#x} has no payload fields")
    setup_sects = image[0x1F1] or 4
    start = (setup_sects + 1) * 512
    off, length = struct.unpack_from("<II", image, 0x248)
    return image[start + off:start + off + length]


def _unzstd(data: bytes) -> bytes:
    try:
        import zstandard  # type: ignore[import-not-found]
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    except ImportError:
        pass
    if not shutil.which("zstd"):
        raise BzImageError("zstd-compressed kernel and neither a zstd module nor the zstd program")
    # The payload ends with a 4-byte decompressed size appended by the kernel build: drop trailing bytes.
    res = subprocess.run(["zstd", "-dc"], input=data, capture_output=True)
    if not res.stdout:
        raise BzImageError(f"zstd -dc failed: {res.stderr.decode(errors='replace').strip()}")
    return res.stdout


def decompress(blob: bytes) -> bytes:
    if blob.startswith(MAGIC_XZ):
        # The kernel appends the uncompressed size after the xz stream; decompress the stream only.
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        return dec.decompress(blob)
    if blob.startswith(MAGIC_ZSTD):
        return _unzstd(blob)
    if blob.startswith(MAGIC_GZIP):
        return gzip.GzipFile(fileobj=io.BytesIO(blob)).read()
    if blob.startswith(MAGIC_BZ2):
        return bz2.BZ2Decompressor().decompress(blob)
    raise BzImageError(f"unknown kernel compression, magic {blob[:6].hex()}")


def vmlinux(image: bytes) -> bytes:
    data = decompress(payload(image))
    if not data.startswith(b"\x7fELF"):
        raise BzImageError("decompressed payload is not an ELF vmlinux")
    return data


def btf_from_bzimage(image: bytes) -> bytes:
    elf = ELFFile(io.BytesIO(vmlinux(image)))
    sec = elf.get_section_by_name(".BTF")
    if sec is None:
        raise BzImageError("vmlinux has no .BTF section (CONFIG_DEBUG_INFO_BTF off)")
    return sec.data()
