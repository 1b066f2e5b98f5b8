"""Dev-only oracle: our CO-RE relocation equals libbpf's, instruction by instruction.

For every program of bpf/prebuilt/*.bpf.o and of the CO-RE test objects tests/bpf/core_*.bpf.o,
against this machine's kernel BTF, the Debian 6.1 and 6.12 kernels' BTF, and two hand-built
"other kernel" BTFs (tests/unit/core_targets.py: layout_b moves everything, layout_c has near
misses).  Needs gcc, libbpf-dev and root (libbpf probes the kernel and creates the object's maps;
program loads are intercepted, nothing reaches the verifier).  Anything missing is a failure,
not a skip."""
from __future__ import annotations

import pathlib
import subprocess

import pytest

from netbee.loader.btf import Btf
from tests.oracle import compare as cmp
from tests.oracle.kernel_btf import kernel_btf_path
from tests.unit import core_targets

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
HERE = pathlib.Path(__file__).resolve().parent

OBJECTS = sorted(ROOT.glob("bpf/prebuilt/*.bpf.o")) + sorted(ROOT.glob("tests/bpf/core_*.bpf.o"))
TARGETS = ["host", "debian-6.1", "debian-6.12", "layout-b", "layout-c"]


def _programs(path: pathlib.Path):
    view = cmp.ObjectView.load(path)
    return [name for name, fn in sorted(view.funcs.items()) if fn.section != ".text"]


PARAMS = [pytest.param(obj, prog, id=f"{obj.name}:{prog}") for obj in OBJECTS for prog in _programs(obj)]


@pytest.fixture(scope="session")
def snapshots(tmp_path_factory):
    """Objects copied once per session (a rebuild during the run must not mix two versions),
    with their parsed views: ours (pyelftools) and the loader's (elf.py)."""
    from netbee.loader.elf import ObjectSpec

    cache = {}
    base = tmp_path_factory.mktemp("objects")

    def get(path: pathlib.Path):
        if path not in cache:
            copy = base / path.name
            copy.write_bytes(path.read_bytes())
            cache[path] = (copy, cmp.ObjectView.load(copy), ObjectSpec.from_path(str(copy)))
        return cache[path]
    return get


@pytest.fixture(scope="session")
def harness(tmp_path_factory) -> pathlib.Path:
    exe = tmp_path_factory.mktemp("oracle") / "libbpf_oracle"
    subprocess.run(["gcc", "-O1", "-Wall", "-Werror", "-o", str(exe), str(HERE / "libbpf_oracle.c"),
                    "-lbpf", "-ldl"], check=True)
    return exe


@pytest.fixture(scope="session")
def targets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("btf")
    (tmp / "layout_b.btf").write_bytes(core_targets.layout_b().to_bytes())
    (tmp / "layout_c.btf").write_bytes(core_targets.layout_c().to_bytes())
    paths = {
        "host": pathlib.Path("/sys/kernel/btf/vmlinux"),
        "debian-6.1": kernel_btf_path("6.1"),
        "debian-6.12": kernel_btf_path("6.12"),
        "layout-b": tmp / "layout_b.btf",
        "layout-c": tmp / "layout_c.btf",
    }
    return {name: (path, Btf.load_kernel(str(path))) for name, path in paths.items()}


def test_objects_present():
    names = {p.name for p in OBJECTS}
    assert {"core_local.bpf.o", "core_kernel.bpf.o"} <= names, names


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("obj,prog", PARAMS)
def test_same_instructions_as_libbpf(harness, targets, snapshots, tmp_path, obj, prog, target):
    path, btf = targets[target]
    copy, view, spec = snapshots(obj)
    theirs = cmp.run_libbpf(harness, copy, path, prog, tmp_path / "insns.bin", view.funcs[prog].section)
    # 1. core.py alone, on the ELF sections (program and the subprograms libbpf appended)
    res = cmp.compare(view, prog, btf, theirs)
    assert not res.mismatches, "\n".join(res.mismatches[:30])
    assert res.compared > 0
    # 2. the loader's pipeline: elf.py's linked program, then core.py; only map fds may differ
    linked = cmp.compare_linked(spec, prog, btf, theirs)
    assert not linked.mismatches, "\n".join(linked.mismatches[:30])
    assert linked.compared == len(theirs) // 8


def test_oracle_is_not_vacuous(harness, targets, tmp_path):
    """The comparison sees real relocation work: libbpf moved offsets, and we agree."""
    obj = ROOT / "tests/bpf/core_kernel.bpf.o"
    path, btf = targets["debian-6.1"]
    theirs = cmp.run_libbpf(harness, obj, path, "kcore_skb", tmp_path / "insns.bin")
    view = cmp.ObjectView.load(obj)
    res = cmp.compare(view, "kcore_skb", btf, theirs)
    assert not res.mismatches
    assert res.relocated_by_core >= 30 and res.changed_by_core >= 10
    raw = view.sections[view.funcs["kcore_skb"].section]
    assert theirs[:len(raw)] != raw

