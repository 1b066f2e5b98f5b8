"""Kernel function calls on the running kernel: bpf_rdonly_cast resolved (or replaced by its move
on a kernel without it), a missing kfunc named, and the tracer's programs walking no pointer
through a trusted one (each such load costs the verifier a search of the whole kernel BTF)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List

import pytest

from netbee.loader import features
from netbee.loader import insn as I
from netbee.loader.btf import Btf, BtfKind
from netbee.loader.collection import Collection
from netbee.loader.elf import ObjectSpec
from netbee.loader.errors import ObjectFileError

# requires_kernel without features: runs here and in the QEMU guests too (6.1 has no
# bpf_rdonly_cast, 6.12 has it and the trust rules)
pytestmark = [pytest.mark.kernel, pytest.mark.requires_kernel()]

ROOT = Path(__file__).resolve().parents[2]
KFUNC = ROOT / "tests/bpf/kfunc.bpf.o"
PREBUILT = ROOT / "bpf/prebuilt/netbee.bpf.o"

# r2 = *(u64 *)(r7 +16)   ; R2=untrusted_ptr_net_device() R7=untrusted_ptr_sk_buff()
_LOAD = re.compile(r"^\s*\d+: (?:[.0-9]+ )?\(79\) r(\d+) = \*\(u64 \*\)\(r(\d+) [+-]\d+\)(.*)$")
_REG = re.compile(r"\bR(\d+)=(\S+)")
_BTF_PTR = re.compile(r"^(?:trusted_|rcu_|untrusted_)?ptr_(?:or_null_)?[a-z_0-9]+\(")


@pytest.fixture(scope="module")
def kbtf() -> Btf:
    return Btf.load_kernel()


def test_rdonly_cast_loads_and_is_resolved(kbtf) -> None:
    spec = ObjectSpec.from_path(str(KFUNC), programs=["cast_skb"])
    at = spec.programs["cast_skb"].kfunc_calls[0].insn_index
    with Collection(spec, kbtf, programs=["cast_skb"], log_level=2) as coll:
        assert coll.warnings == []
        ins = I.decode(coll.prepared["cast_skb"].insns, at)
        log = coll.programs["cast_skb"].log
    ids = kbtf.find("bpf_rdonly_cast", BtfKind.FUNC)
    if ids:   # 6.2+: the kernel's function; the verifier sees an untrusted pointer
        assert (ins.opcode, ins.src, ins.imm) == (I.OP_CALL, I.BPF_PSEUDO_KFUNC_CALL, ids[0])
        assert "untrusted_ptr_sk_buff" in log
    else:     # older: the move the kernel would have run
        assert (ins.opcode, ins.dst, ins.src) == (I.BPF_ALU64 | I.BPF_MOV | I.BPF_X, 0, 1)


def test_missing_kfunc_is_named(kbtf) -> None:
    spec = ObjectSpec.from_path(str(KFUNC), programs=["calls_missing"])
    with pytest.raises(ObjectFileError, match="calls kernel function 'nb_no_such_kfunc', which this kernel does not have"):
        Collection(spec, kbtf, programs=["calls_missing"])


def pointer_loads_through_trusted(log: str) -> List[str]:
    """Log lines (level 2) that load a BTF pointer through a trusted or RCU pointer."""
    last: Dict[str, str] = {}
    bad = []
    for line in log.splitlines():
        m = _LOAD.match(line)
        if m:
            dst, src, state = m.groups()
            after = dict(_REG.findall(state))
            base = after.get(src) if dst != src else last.get(src)
            loaded = after.get(dst, "")
            if base and _BTF_PTR.match(loaded) and base.startswith(("trusted_ptr_", "rcu_ptr_")):
                bad.append(line.strip())
        last.update(_REG.findall(line))
    return bad


def test_tracer_programs_walk_no_pointer_through_a_trusted_one(kbtf) -> None:
    spec = ObjectSpec.from_path(str(PREBUILT))
    kinds = ["tp_btf"] + (["netfilter"] if features.prog_type("netfilter")[0] else [])   # netfilter: 6.4+
    names = [n for n, p in spec.programs.items() if p.kind in kinds]
    assert "tp_netif_receive_skb" in names and ("nf_entry" in names or "netfilter" not in kinds)
    with Collection(spec, kbtf, programs=names, log_level=2) as coll:
        assert coll.warnings == []
        logs = {n: p.log for n, p in coll.programs.items()}
    for name, log in logs.items():
        assert "processed" in log, name                      # the whole log came back
        assert pointer_loads_through_trusted(log) == [], name


def test_the_check_sees_trusted_loads() -> None:
    log = ("0: (79) r1 = *(u64 *)(r1 +0)         ; R1=trusted_ptr_sk_buff()\n"
           "1: (79) r2 = *(u64 *)(r1 +16)        ; R1=trusted_ptr_sk_buff() R2=ptr_net_device()\n"
           "2: (79) r1 = *(u64 *)(r1 +24)        ; R1=rcu_ptr_or_null_sock(id=1)\n"
           "3: (79) r3 = *(u64 *)(r2 +16)        ; R2=ptr_net_device() R3=ptr_net()\n"
           "4: (79) r4 = *(u64 *)(r5 +8)         ; R4=untrusted_ptr_sock() R5=untrusted_ptr_sk_buff()\n")
    assert [b.split(":")[0] for b in pointer_loads_through_trusted(log)] == ["1", "2"]
