"""Debian kernels for the QEMU tests: download, unpack and cache them outside the work tree.

kernel_dir("6.1" | "6.12") -> unpacked package root (boot/vmlinuz-*, lib/modules/*), newest generic
-amd64 image that apt-cache lists (the -cloud flavour has no 9p, the guest could not mount our root).
kernel_btf(series) -> the kernel's .BTF section, taken from the vmlinux inside the vmlinuz.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

CACHE = Path(os.environ.get("NETBEE_KERNEL_CACHE", "/var/cache/netbee/kernels"))
SERIES: Dict[str, "re.Pattern[str]"] = {
    "6.1": re.compile(r"^linux-image-6\.1\.0-(\d+)-amd64$"),
    "6.12": re.compile(r"^linux-image-6\.12\.(\d+)\+deb12-amd64$"),
}
COMPLETE = ".netbee-complete"


class KernelFetchError(RuntimeError):
    pass


def _pattern(series: str) -> "re.Pattern[str]":
    try:
        return SERIES[series]
    except KeyError:
        raise ValueError(f"unknown kernel series {series!r}; known: {sorted(SERIES)}") from None


def available_packages(series: str) -> List[str]:
    """Generic -amd64 image packages apt-cache knows for the series, oldest first."""
    pat = _pattern(series)
    res = subprocess.run(["apt-cache", "search", "--names-only", "^linux-image-"],
                         capture_output=True, text=True, check=False)
    names = []
    for line in res.stdout.splitlines():
        name = line.split(" - ", 1)[0].strip()
        m = pat.match(name)
        if m:
            names.append((int(m.group(1)), name))
    return [n for _, n in sorted(names)]


def _cached(series: str) -> List[Path]:
    pat = _pattern(series)
    if not CACHE.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in CACHE.iterdir()
             for m in [pat.match(p.name)] if m and (p / COMPLETE).exists()]
    return [p for _, p in sorted(found)]


def kernel_dir(series: str) -> Path:
    """Unpacked root of the newest Debian generic kernel of the series (downloaded once, cached)."""
    packages = available_packages(series)
    if not packages:
        cached = _cached(series)
        if cached:  # apt lists not updated (offline): the newest kernel we already have will do
            return cached[-1]
        raise KernelFetchError(f"apt-cache lists no linux-image for {series} (run apt-get update)")
    pkg = packages[-1]
    dest = CACHE / pkg
    if (dest / COMPLETE).exists():
        return dest
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent test sessions download once
        if not (dest / COMPLETE).exists():
            _download_and_unpack(pkg, dest)
    return dest


def _download_and_unpack(pkg: str, dest: Path) -> None:
    with tempfile.TemporaryDirectory(dir=CACHE, prefix=".dl-") as tmp:
        res = subprocess.run(["apt-get", "download", pkg], cwd=tmp, capture_output=True, text=True)
        debs = list(Path(tmp).glob("*.deb"))
        if res.returncode != 0 or len(debs) != 1:
            raise KernelFetchError(f"apt-get download {pkg} failed: {res.stderr.strip()}")
        root = Path(tmp) / "root"
        res = subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], capture_output=True, text=True)
        if res.returncode != 0:
            raise KernelFetchError(f"dpkg-deb -x {debs[0].name} failed: {res.stderr.strip()}")
        (root / COMPLETE).write_text(debs[0].name + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(root, dest)


def vmlinuz(root: Path) -> Path:
    images = sorted((root / "boot").glob("vmlinuz-*"))
    if len(images) != 1:
        raise KernelFetchError(f"expected one boot/vmlinuz-* in {root}, found {images}")
    return images[0]


def release(root: Path) -> str:
    return vmlinuz(root).name[len("vmlinuz-"):]


def kernel_btf(series: str) -> bytes:
    """The .BTF section of the series' vmlinux, decompressed from the bzImage in pure Python."""
    from tests.vm import bzimage
    root = kernel_dir(series)
    cached = root / "vmlinux.btf"
    if cached.exists():
        return cached.read_bytes()
    data = bzimage.btf_from_bzimage(vmlinuz(root).read_bytes())
    tmp = cached.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, cached)
    return data


def main(argv: Optional[List[str]] = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    for series in args or sorted(SERIES):
        print(series, kernel_dir(series))
    return 0


if __name__ == "__main__":
    sys.exit(main())
