"""netbee/abi.py and netbee/hooks.py against the BTF of the built object (bpf/prebuilt/netbee.bpf.o)."""
from __future__ import annotations

import pathlib
import sys

import pytest

from netbee import abi, hooks
from netbee.loader.btf import Btf, BtfKind, btf_section_from_elf

OBJ = pathlib.Path(__file__).resolve().parents[2] / "bpf" / "prebuilt" / "netbee.bpf.o"


@pytest.fixture(scope="module")
def btf() -> Btf:
    return Btf.parse(btf_section_from_elf(OBJ.read_bytes(), str(OBJ)))


def _struct(btf: Btf, name: str):
    ids = btf.find(name, BtfKind.STRUCT)
    assert ids, f"struct {name} is not in the object's BTF"
    return btf.type(ids[0])


def _btf_fields(btf: Btf, name: str):
    """(name, offset, size) for each member of struct `name`."""
    s = _struct(btf, name)
    out = []
    for m in s.members:
        assert m.bitfield_size == 0 and m.bit_offset % 8 == 0, m
        out.append((m.name, m.bit_offset // 8, btf.sizeof(m.type)))
    return s.size, out


@pytest.mark.parametrize("cname,layout", [("nb_event", abi.EVENT), ("nb_rule", abi.RULE),
                                          ("nb_config", abi.CONFIG), ("nb_dyn_filter", abi.DYN_FILTER),
                                          ("nb_scratch_head", abi.SCRATCH_HEAD)])
def test_struct_layout_matches_btf(btf: Btf, cname: str, layout) -> None:
    size, fields = _btf_fields(btf, cname)
    assert layout.sizeof() == size
    assert abi.field_layout(layout) == fields


def test_event_size_is_184(btf: Btf) -> None:
    assert _struct(btf, "nb_event").size == abi.EVENT_SIZE == 184


def _enum(btf: Btf, name: str) -> dict:
    ids = btf.find(name, BtfKind.ENUM)
    assert ids, f"enum {name} is not in the object's BTF"
    return {v.name: v.value for v in btf.type(ids[0]).values}


@pytest.mark.parametrize("cname,prefix,pyenum", [("nb_hook", "NB_HOOK_", abi.NbHook),
                                                 ("nb_counter", "NB_CNT_", abi.NbCounter)])
def test_enums_match_btf(btf: Btf, cname: str, prefix: str, pyenum) -> None:
    got = _enum(btf, cname)
    assert got == {prefix + m.name: m.value for m in pyenum}


def test_hook_table_ids_match_enum_nb_hook(btf: Btf) -> None:
    values = _enum(btf, "nb_hook")
    for h in hooks.HOOKS:
        assert values["NB_HOOK_" + h.key] == h.id, h
    # every real hook is described exactly once
    assert sorted(h.id for h in hooks.HOOKS) == sorted(v for k, v in values.items()
                                                      if k not in ("NB_HOOK_NONE", "NB_HOOK_MAX"))


def test_hook_programs_exist_in_object() -> None:
    from netbee.loader.elf import ObjectSpec

    spec = ObjectSpec.from_path(str(OBJ))
    for h in hooks.HOOKS:
        for backend, groups in h.backends.items():
            for group in groups:
                for t in group:
                    assert t.program in spec.programs, (h.key, backend, t.program)
                    assert spec.programs[t.program].kind == t.kind, (t.program, spec.programs[t.program].kind)


def test_header_constants_match(btf: Btf) -> None:
    """#defines leave no BTF: compare them with the header text itself."""
    import re

    text = (OBJ.parents[1] / "src" / "netbee_abi.h").read_text()
    defines = {m.group(1): int(m.group(2), 0) for m in re.finditer(r"#define\s+(NB_\w+)\s+(0x[0-9a-fA-F]+|\d+)", text)}
    for name, value in defines.items():
        short = name[len("NB_"):]
        mirror = getattr(abi, name, getattr(abi, short, None))
        assert mirror == value, name
    # and nothing in abi.py's flag/verdict namespace is missing from the header
    for name in dir(abi):
        if name.startswith(("F_", "VERDICT_")):
            assert "NB_" + name in defines, name


def test_config_rules_ops_fields_match_header() -> None:
    import re

    text = (OBJ.parents[1] / "src" / "netbee_abi.h").read_text()
    for pyenum, prefix in ((abi.RuleOp, "NB_OP_"), (abi.RuleField, "NB_FIELD_")):
        found = {m.group(1): int(m.group(2)) for m in re.finditer(prefix + r"(\w+)\s*=\s*(\d+)", text)}
        assert found == {m.name: m.value for m in pyenum}


def test_build_config_round_trip() -> None:
    rule = abi.RULE.build(dict(op=0, field=3, family=4, pad=0, lo=0, hi=0, value=0,
                               addr=bytes([10, 200, 0, 0]) + bytes(12), mask=b"\xff\xff" + bytes(14)))
    blob = abi.build_config(rule, 1, want_stack=True, wakeup_bytes=4096)
    assert len(blob) == abi.CONFIG_SIZE
    cfg = abi.CONFIG.parse(blob)
    assert (cfg.filter_len, cfg.want_stack, cfg.wakeup_bytes) == (1, 1, 4096)
    assert cfg.rules[0].field == 3 and cfg.rules[0].addr[:2] == bytes([10, 200])
    assert all(r.op == 0 and r.field == 0 for r in cfg.rules[1:])
    with pytest.raises(ValueError):
        abi.build_config(rule, 2)


def test_count_events_sums_the_shared_map_and_every_level_of_every_cpu() -> None:
    C = abi.NbCounter

    def u64(n: int) -> bytes:
        return n.to_bytes(8, sys.byteorder)

    shared = {C.FILTERED: [u64(5), u64(1)], C.SUBMITTED: [u64(0), u64(7)], C.LOST: []}
    rows0 = [[10, 0, 0], [2, 3, 0], [0, 0, 0], [0, 0, 1]]   # per level: filtered, submitted, lost
    rows1 = [[0, 4, 9], [0, 0, 0], [1, 0, 0], [0, 0, 0]]
    records = bytes(512)   # what follows the head in the map value is not counted
    scratch = [abi.SCRATCH_HEAD.build({"depth": 0, "pad": 0, "count": r}) + records for r in (rows0, rows1)]
    got = abi.count_events(shared, scratch)
    assert got == {C.FILTERED: 5 + 1 + 10 + 2 + 1, C.SUBMITTED: 7 + 3 + 4, C.LOST: 1 + 9}

