"""Dev-only: the BTF of a Debian kernel as a file, for the libbpf oracle (btf_custom_path).

tests/vm/kernels.py (harness engineer) fetches the kernel and extracts its .BTF in pure Python;
the bytes are cached here as a raw BTF file under /var/cache/netbee/btf/ (outside the work tree)."""
from __future__ import annotations

import os
import pathlib

CACHE = pathlib.Path("/var/cache/netbee/btf")


def kernel_btf_path(series: str) -> pathlib.Path:
    """A raw BTF file for Debian kernel `series` ("6.1" or "6.12"), cached."""
    from tests.vm import kernels

    release = kernels.release(kernels.kernel_dir(series))
    path = CACHE / f"{release}.btf"
    if path.exists():
        return path
    data = kernels.kernel_btf(series)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.rename(path)
    return path
