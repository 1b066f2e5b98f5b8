"""Dev-only oracle: elf.py links programs exactly as libbpf does.

For every program of tests/bpf/elf_link.bpf.o (elf_basic without map pinning), the
instructions libbpf hands to BPF_PROG_LOAD (captured by tests/oracle/libbpf_oracle.c,
which intercepts the load) equal ours after CO-RE against this machine's kernel BTF:
same subprograms in the same order, same call offsets, same global-data offsets; only
map fd immediates differ. Needs gcc, libbpf-dev and root (libbpf creates the maps).
Debian's libbpf 1.1 does not know SEC("netfilter"): the harness's shim stands in for it."""
from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

from netbee.loader.btf import Btf
from netbee.loader.elf import ObjectSpec
from tests.oracle import compare as cmp

pytestmark = pytest.mark.kernel

ROOT = pathlib.Path(__file__).resolve().parents[2]
OBJ = ROOT / "tests/bpf/elf_link.bpf.o"
VMLINUX = pathlib.Path("/sys/kernel/btf/vmlinux")
PROGRAMS = sorted(ObjectSpec.from_path(str(OBJ)).programs)


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> pathlib.Path:
    assert shutil.which("gcc"), "gcc is needed to build the libbpf oracle"
    exe = tmp_path_factory.mktemp("elf_oracle") / "libbpf_oracle"
    subprocess.run(["gcc", "-O1", "-Wall", "-Werror", "-o", str(exe),
                    str(ROOT / "tests/oracle/libbpf_oracle.c"), "-lbpf", "-ldl"], check=True)
    return exe


@pytest.fixture(scope="module")
def host_btf() -> Btf:
    return Btf.load_kernel(str(VMLINUX))


def test_program_list():
    assert len(PROGRAMS) == 14


@pytest.mark.parametrize("prog", PROGRAMS)
def test_linked_like_libbpf(prog, harness, host_btf, tmp_path):
    spec = ObjectSpec.from_path(str(OBJ))
    section = spec.programs[prog].section
    theirs = cmp.run_libbpf(harness, OBJ, VMLINUX, prog, tmp_path / "insns.bin", section)
    res = cmp.compare_linked(spec, prog, host_btf, theirs)
    assert not res.mismatches, "\n".join(res.mismatches[:20])
    assert res.compared == len(theirs) // 8
