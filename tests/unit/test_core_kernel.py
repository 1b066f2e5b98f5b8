"""CO-RE against this machine's kernel BTF (/sys/kernel/btf/vmlinux): tests/bpf/core_kernel.bpf.o.

Expected values come from plain member/enum lookups in the kernel BTF, not from core.py."""
from __future__ import annotations

import pytest

from netbee.loader import core
from netbee.loader.btf import Btf, BtfKind
from netbee.loader.btf_ext import CoreReloKind as K
from tests.unit.core_objects import load


@pytest.fixture(scope="module")
def kernel() -> Btf:
    return Btf.load_kernel()   # a missing /sys/kernel/btf/vmlinux fails the test, as it should


@pytest.fixture(scope="module")
def obj():
    return load("core_kernel.bpf.o")


def relocated(obj, prog, kernel):
    sec = obj.programs[prog]
    return core.relocate(prog, obj.relos[sec], obj.btf, kernel)


def member_offset(btf: Btf, struct: str, path: str) -> int:
    """Byte offset of a dotted member path, descending into anonymous members."""
    tid = btf.find(struct, BtfKind.STRUCT)[0]
    total = 0
    for name in path.split("."):
        found = _find(btf, tid, name)
        assert found is not None, (struct, path)
        bits, tid = found
        total += bits
    return total // 8


def _find(btf, tid, name):
    t = btf.type(btf.resolve(tid))
    for m in t.members:
        if m.name == name:
            return m.bit_offset, m.type
        if not m.name:
            sub = _find(btf, m.type, name)
            if sub is not None:
                return m.bit_offset + sub[0], sub[1]
    return None


@pytest.mark.parametrize("struct,access,path", [
    ("sk_buff", "0:0", "len"),
    ("sk_buff", "0:2", "protocol"),
    ("sk_buff", "0:4", "network_header"),
    ("sk_buff", "0:8", "dev"),
    ("sk_buff", "0:9", "sk"),
    ("sk_buff", "0:12", "mark"),
    ("net_device", "0:0", "ifindex"),
    ("sock", "0:0:0", "__sk_common.skc_family"),
])
def test_offsets_match_kernel_layout(obj, kernel, struct, access, path):
    fx = [f for f in relocated(obj, "kcore_skb", kernel)
          if f.kind == K.FIELD_BYTE_OFFSET and f.type_name == f"struct {struct}" and f.access == access]
    assert fx and all(not f.poison for f in fx)
    assert {f.target_value for f in fx} == {member_offset(kernel, struct, path)}


def test_array_element_offset(obj, kernel):
    fx = [f for f in relocated(obj, "kcore_skb", kernel) if f.access == "0:1:3"]
    assert [f.target_value for f in fx] == [member_offset(kernel, "net_device", "name") + 3]


def test_kernel_enums(obj, kernel):
    values = kernel.enum_values("skb_drop_reason")
    fx = {(f.kind, f.access): f for f in relocated(obj, "kcore_enums", kernel)}
    assert fx[(K.ENUMVAL_VALUE, "1")].target_value == values["SKB_DROP_REASON_NO_SOCKET"]
    assert fx[(K.ENUMVAL_VALUE, "2")].target_value == values["SKB_DROP_REASON_NETFILTER_DROP"]
    assert fx[(K.ENUMVAL_EXISTS, "3")].target_value == 0
    assert fx[(K.ENUMVAL_VALUE, "3")].poison
    assert fx[(K.ENUMVAL_VALUE, "5")].target_value == kernel.enum_values("nf_inet_hooks")["NF_INET_NUMHOOKS"]


def test_kernel_types_and_missing_fields(obj, kernel):
    fxs = relocated(obj, "kcore_exists", kernel)
    by = {(f.kind, f.type_name, f.access): f for f in fxs}
    skb = kernel.find("sk_buff", BtfKind.STRUCT)[0]
    assert by[(K.TYPE_ID_TARGET, "struct sk_buff", "0")].target_value == skb
    assert by[(K.TYPE_SIZE, "struct sk_buff", "0")].target_value == kernel.type(skb).size
    assert by[(K.TYPE_EXISTS, "struct sk_buff", "0")].target_value == 1
    assert by[(K.FIELD_EXISTS, "struct sock", "0:0:1")].target_value == 0
    assert by[(K.FIELD_BYTE_OFFSET, "struct sock", "0:0:1")].poison
    # a flavor of sk_buff finds the kernel's sk_buff, which lacks the field
    assert by[(K.FIELD_EXISTS, "struct sk_buff___nb_old", "0:0")].target_value == 0
    assert by[(K.FIELD_BYTE_OFFSET, "struct task_struct", "0:1")].target_value == \
        member_offset(kernel, "task_struct", "tgid")


def test_kernel_bitfield(obj, kernel):
    """skb->pkt_type: a 3-bit bitfield; the relocated load covers it."""
    fx = {f.kind: f.target_value for f in relocated(obj, "kcore_skb", kernel)
          if f.type_name == "struct sk_buff" and f.access == "0:5"}
    off, size = fx[K.FIELD_BYTE_OFFSET], fx[K.FIELD_BYTE_SIZE]
    assert fx[K.FIELD_RSHIFT_U64] == 64 - 3
    bit_in_load = 64 - fx[K.FIELD_LSHIFT_U64] - 3
    assert 0 <= bit_in_load and bit_in_load + 3 <= size * 8
    assert off * 8 + bit_in_load == _pkt_type_bit(kernel)


def _pkt_type_bit(kernel) -> int:
    skb = kernel.find("sk_buff", BtfKind.STRUCT)[0]

    def walk(tid, base):
        for m in kernel.type(kernel.resolve(tid)).members:
            if m.name == "pkt_type":
                return base + m.bit_offset
            if not m.name:
                r = walk(m.type, base + m.bit_offset)
                if r is not None:
                    return r
        return None
    return walk(skb, 0)


def test_relocating_all_prebuilt_programs_is_fast(kernel):
    """Every program of the prebuilt object against vmlinux: measured, bounded loosely."""
    import pathlib
    import time

    from netbee.loader.elf import ObjectSpec

    path = pathlib.Path(__file__).resolve().parent.parent.parent / "bpf/prebuilt/netbee.bpf.o"
    spec = ObjectSpec.from_path(str(path))
    fresh = Btf.load_kernel()
    start = time.process_time()   # CPU, not wall: the CI cores are shared
    n = sum(len(core.relocate(name, p.core_relos, spec.btf, fresh)) for name, p in spec.programs.items())
    elapsed = time.process_time() - start
    assert n > 0
    assert elapsed < 5.0, f"{n} relocations took {elapsed:.2f}s of CPU"
