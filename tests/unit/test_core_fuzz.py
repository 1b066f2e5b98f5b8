"""CO-RE on hostile input: any relocation record, target BTF or instruction stream either works
or raises CoreRelocationError - never IndexError, KeyError, RecursionError or a hang."""
from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings, strategies as st

from netbee.loader import core
from netbee.loader.btf import Btf, Int, Member, Ptr, Struct, Typedef
from netbee.loader.btf_ext import CoreRelo, CoreReloKind
from netbee.loader.errors import CoreRelocationError
from tests.unit import core_targets
from tests.unit.core_objects import load

OBJ = load("core_local.bpf.o")
TARGET = core_targets.layout_b()

access_strings = st.one_of(
    st.lists(st.integers(0, 20), min_size=1, max_size=8).map(lambda xs: ":".join(map(str, xs))),
    st.text(alphabet="0123456789:-x ", max_size=12),
)
relos = st.builds(
    CoreRelo,
    insn_off=st.integers(0, 40).map(lambda i: i * 8),
    type_id=st.integers(0, len(OBJ.btf) + 3),
    access_str=access_strings,
    kind=st.sampled_from(list(CoreReloKind)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(relos, min_size=1, max_size=6))
def test_random_relocations(rs):
    try:
        fixups = core.relocate("fuzz", rs, OBJ.btf, TARGET)
    except CoreRelocationError as exc:
        assert "fuzz" in str(exc) and "insn #" in str(exc)
        return
    assert len(fixups) == len(rs)
    insns = bytearray(8 * 48)
    try:
        core.apply_fixups(insns, fixups)
    except CoreRelocationError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=8, max_size=64).map(lambda b: bytearray(b[:len(b) // 8 * 8])),
       st.integers(0, 10), st.sampled_from(list(CoreReloKind)), st.integers(0, 1 << 64),
       st.integers(0, 1 << 64), st.booleans(), st.integers(0, 9), st.integers(0, 9), st.booleans())
def test_random_patching(insns, idx, kind, lval, tval, poison, lsz, tsz, bad):
    fx = core.Fixup(idx, kind, lval & core.U64, tval & core.U64, poison, "r", program="p",
                    type_name="struct s", access="0:1", local_size=lsz, target_size=tsz,
                    bad_size_change=bad)
    try:
        core.apply_fixups(insns, [fx])
    except CoreRelocationError as exc:
        assert "'p'" in str(exc) and f"insn #{idx}" in str(exc)


def _hostile_targets():
    loop = Btf()
    i = loop.add_type(Int("int", 4, 1, 0, 32))
    loop.add_type(Typedef("nb_sample", 3))       # typedef -> itself
    loop.add_type(Typedef("nb_inner", 2))
    deep = Btf()
    i = deep.add_type(Int("int", 4, 1, 0, 32))
    prev = deep.add_type(Struct("nb_inner", 4, [Member("x", i, 0)]))
    for _ in range(200):                        # a pointer chain longer than any depth limit
        prev = deep.add_type(Ptr(prev))
    deep.add_type(Struct("nb_sample", 8, [Member("ptr", prev, 0)]))
    return [loop, deep]


def test_hostile_targets_fail_cleanly():
    for target in _hostile_targets():
        for sec, rs in OBJ.relos.items():
            for r in rs:
                try:
                    core.relocate(sec, [r], OBJ.btf, target)
                except CoreRelocationError as exc:
                    assert sec in str(exc)


def test_truncated_ld_imm64_is_refused():
    fx = core.Fixup(0, CoreReloKind.ENUMVAL_VALUE, 1, 2, False, "r", program="p")
    insns = bytearray(struct.pack("<BBhi", 0x18, 0, 0, 1))
    try:
        core.apply_fixups(insns, [fx])
    except CoreRelocationError as exc:
        assert "ld_imm64" in str(exc)
    else:
        raise AssertionError("a lone ld_imm64 slot was patched")
