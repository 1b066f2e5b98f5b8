"""elf.py's output on the real kernel: the linked programs of tests/bpf/elf_link.bpf.o that
this kernel can run (tp_btf, raw_tp, tracepoint, netfilter) pass the verifier through
netbee's own loader, and one of them, attached, updates global data at the offset elf.py
computed. Loopback traffic only."""
from __future__ import annotations

import pathlib
import subprocess
import time

import pytest

from netbee.loader.btf import Btf
from netbee.loader.collection import Collection
from netbee.loader.elf import ObjectSpec
from netbee.loader.links import attach_raw_tp

pytestmark = pytest.mark.kernel

ROOT = pathlib.Path(__file__).resolve().parents[2]
OBJ = ROOT / "tests/bpf/elf_link.bpf.o"
RUNNABLE_HERE = ("tp_btf", "raw_tp", "tracepoint", "netfilter")


@pytest.fixture(scope="module")
def kernel_btf() -> Btf:
    return Btf.load_kernel()


def test_linked_programs_pass_the_verifier(kernel_btf):
    spec = ObjectSpec.from_path(str(OBJ))
    names = sorted(n for n, p in spec.programs.items() if p.kind in RUNNABLE_HERE)
    assert names == ["nf", "rtp", "rtp_long", "rtp_str", "tp_kfree", "tp_short", "tpb_one",
                     "tpb_two"]
    spec.set_global("cfg", (1).to_bytes(4, "little") + (80).to_bytes(4, "little") + bytes(16))
    with Collection(spec, kernel_btf=kernel_btf, programs=names) as coll:
        assert sorted(coll.programs) == names
        assert coll.maps[".rodata"].lookup(0)[:8] == bytes([1, 0, 0, 0, 80, 0, 0, 0])
        assert coll.maps[".data"].lookup(0) == (3).to_bytes(4, "little")


def test_global_data_written_by_a_linked_program(kernel_btf):
    # rtp_long does `hits++` on net_dev_xmit: the ld_imm64 elf.py relocated to .data+0
    spec = ObjectSpec.from_path(str(OBJ))
    with Collection(spec, kernel_btf=kernel_btf, programs=["rtp_long"]) as coll:
        with attach_raw_tp(coll.programs["rtp_long"], "net_dev_xmit"):
            deadline = time.monotonic() + 10
            hits = 3
            while hits <= 3 and time.monotonic() < deadline:
                subprocess.run(["ping", "-c", "2", "-i", "0.2", "-q", "127.0.0.1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
                hits = int.from_bytes(coll.maps[".data"].lookup(0), "little")
        assert hits > 3, "net_dev_xmit never ran the program, or it wrote elsewhere"
