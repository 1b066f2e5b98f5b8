"""Dev-only: the BTF of a Debian kernel image, for the libbpf oracle.

Uses tests/vm/kernels.py (harness engineer) to fetch the kernel; takes its kernel_btf() when that
works, else extracts .BTF from the bzImage here: the payload (xz via lzma, zstd via the zstd CLI,
gzip) is the vmlinux ELF.  The result is cached as a raw BTF file under /var/cache/netbee/btf/."""
from __future__ import annotations

import gzip
import io
import lzma
import pathlib
import struct
import subprocess

from elftools.elf.elffile import ELFFile

CACHE = pathlib.Path("/var/cache/netbee/btf")


def _payload(image: bytes) -> bytes:
    if image[0x202:0x206] != b"HdrS":
        raise ValueError("not a bzImage (no HdrS signature)")
    setup_sects = image[0x1F1] or 4
    offset, length = struct.unpack_from("<II", image, 0x248)
    start = (setup_sects + 1) * 512 + offset
    return image[start:start + length]


def vmlinux_from_bzimage(image: bytes) -> bytes:
    data = _payload(image)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        # the kernel build appends the decompressed size (4 bytes) after the zstd frame
        return subprocess.run(["zstd", "-q", "-d", "-c"], input=data[:-4], stdout=subprocess.PIPE,
                              check=True).stdout
    if data[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=io.BytesIO(data)).read()
    raise ValueError(f"unknown bzImage payload compression (magic {data[:6].hex()})")


def btf_from_bzimage(image: bytes) -> bytes:
    elf = ELFFile(io.BytesIO(vmlinux_from_bzimage(image)))
    sec = elf.get_section_by_name(".BTF")
    if sec is None:
        raise ValueError("vmlinux has no .BTF section")
    return sec.data()


def kernel_btf_path(series: str) -> pathlib.Path:
    """A raw BTF file for Debian kernel `series` ("6.1" or "6.12"), cached."""
    from tests.vm import kernels

    root = kernels.kernel_dir(series)
    release = kernels.release(root)
    path = CACHE / f"{release}.btf"
    if path.exists():
        return path
    try:
        data = kernels.kernel_btf(series)
    except ImportError:  # the harness's pure-Python extractor has not landed yet
        data = btf_from_bzimage(kernels.vmlinuz(root).read_bytes())
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.rename(path)
    return path
