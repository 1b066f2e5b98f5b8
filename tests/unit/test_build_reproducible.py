"""The committed BPF objects are exactly what scripts/build_bpf.sh makes from their sources.

Runs the script's --check (it installs clang-19/libbpf-dev from Debian when missing, which is
fine in CI). A second test builds in a copy of the sources at another path and compares bytes, so
the prefix maps really make the build independent of where the checkout lives.
"""
from __future__ import annotations

import pathlib
import shutil
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "build_bpf.sh"


def _sources(folder: str) -> list:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / folder).glob("*.bpf.c"))


def _check(sources: list) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "--check", *sources], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_prebuilt_objects_match_sources() -> None:
    srcs = _sources("bpf/src")
    assert srcs, "no bpf/src/*.bpf.c"
    r = _check(srcs)
    assert r.returncode == 0, r.stderr


def test_test_objects_match_sources() -> None:
    srcs = _sources("tests/bpf")
    assert srcs, "no tests/bpf/*.bpf.c"
    r = _check(srcs)
    assert r.returncode == 0, r.stderr


def test_check_detects_a_stale_object(tmp_path: pathlib.Path) -> None:
    tree = tmp_path / "other" / "checkout"
    for sub in ("bpf/src", "scripts"):
        shutil.copytree(ROOT / sub, tree / sub)
    (tree / "bpf/prebuilt").mkdir(parents=True)
    obj = tree / "bpf/prebuilt/netbee.bpf.o"
    shutil.copy(ROOT / "bpf/prebuilt/netbee.bpf.o", obj)
    # tests/bpf absent: nothing else to build
    r = subprocess.run(["bash", "scripts/build_bpf.sh", "--check"], cwd=tree, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr     # same bytes from another path
    data = bytearray(obj.read_bytes())
    data[-1] ^= 0xFF
    obj.write_bytes(bytes(data))
    r = subprocess.run(["bash", "scripts/build_bpf.sh", "--check"], cwd=tree, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 1 and "bpf/prebuilt/netbee.bpf.o differs" in r.stderr
