"""Compile the benchmarks' helpers into a temporary directory (nothing is committed or installed).

- udpblast: the UDP packet source/sink (cc).
- floor.bpf.o: programs that return at once on netbee's hooks (clang-19, the project's pinned flags).
"""
from __future__ import annotations

import atexit
import pathlib
import shutil
import subprocess
import tempfile
from typing import Optional

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
BPF_FLAGS = ["-g", "-O2", "-target", "bpf", "-mcpu=v3", "-D__TARGET_ARCH_x86"]

_tmp: Optional[pathlib.Path] = None


def workdir() -> pathlib.Path:
    """One temporary directory per process, removed at exit."""
    global _tmp
    if _tmp is None:
        _tmp = pathlib.Path(tempfile.mkdtemp(prefix="nbb-build-"))
        atexit.register(shutil.rmtree, str(_tmp), True)
    return _tmp


def _run(argv: list) -> None:
    res = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed:\n{res.stdout}")


def udpblast() -> pathlib.Path:
    out = workdir() / "udpblast"
    if not out.exists():
        cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang-19")
        if cc is None:
            raise RuntimeError("no C compiler found for bench/udpblast.c")
        _run([cc, "-O2", "-Wall", "-o", str(out), str(HERE / "udpblast.c")])
    return out


def floor_object() -> pathlib.Path:
    out = workdir() / "floor.bpf.o"
    if not out.exists():
        _run(["clang-19"] + BPF_FLAGS + ["-I", str(ROOT / "bpf" / "src"), "-c",
                                         str(HERE / "floor.bpf.c"), "-o", str(out)])
    return out
