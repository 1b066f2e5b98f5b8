"""btf.py on the committed blob, a BTF built by hand, and this machine's vmlinux."""
from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest

from netbee.loader import btf as btf_module
from netbee.loader.btf import (FEATURES, Array, Btf, BtfKind, Const, Datasec, DeclTag, Enum, Enum64,
                               EnumValue, Float, Func, FuncProto, Fwd, Int, Member, Param, Ptr,
                               Restrict, Struct, Typedef, TypeTag, Union, Var, VarSecInfo, Volatile,
                               btf_section_from_elf, sanitize)
from netbee.loader.errors import BTFError

ROOT = Path(__file__).resolve().parents[2]
KINDS_BTF = ROOT / "tests/data/kinds.btf"
KINDS_OBJ = ROOT / "tests/bpf/elf_kinds.bpf.o"
VMLINUX = "/sys/kernel/btf/vmlinux"


@pytest.fixture(scope="module")
def kinds() -> Btf:
    return Btf.parse(KINDS_BTF.read_bytes())


def _one(btf: Btf, name: str, kind: BtfKind):
    ids = btf.find(name, kind)
    assert len(ids) == 1, (name, ids)
    return ids[0], btf.type(ids[0])


def test_blob_matches_its_object():
    # the committed blob must not drift from the object it was taken from
    assert btf_section_from_elf(KINDS_OBJ.read_bytes()) == KINDS_BTF.read_bytes()


def test_every_kind_present(kinds):
    seen = {kinds.type(i).kind for i in range(len(kinds))}
    assert seen == set(BtfKind)


def test_struct_bitfields(kinds):
    _, bits = _one(kinds, "bits", BtfKind.STRUCT)
    assert bits.size == 16
    got = [(m.name, m.bit_offset, m.bitfield_size) for m in bits.members]
    assert got == [("a", 0, 3), ("b", 3, 5), ("c", 8, 24), ("d", 64, 40), ("e", 104, 0)]
    assert kinds.type(bits.members[1].type).encoding == 1  # signed int
    assert kinds.sizeof(kinds.find("bits_t")[0]) == 16


def test_enums_signed_and_64(kinds):
    _, neg = _one(kinds, "negative", BtfKind.ENUM)
    assert neg.signed and [v.value for v in neg.values] == [-5, 3]
    _, big = _one(kinds, "big", BtfKind.ENUM64)
    assert not big.signed and big.values[1] == EnumValue("BIG_B", 0x123456789)
    _, bign = _one(kinds, "big_neg", BtfKind.ENUM64)
    assert bign.signed and bign.values[0].value == -0x123456789
    assert kinds.enum_values("small") == {"SMALL_A": 1, "SMALL_B": 2}
    assert kinds.enum_values("big")["BIG_B"] == 0x123456789
    with pytest.raises(BTFError, match="no enum named 'nope'"):
        kinds.enum_values("nope")


def test_holder_layout_and_modifiers(kinds):
    hid, holder = _one(kinds, "holder", BtfKind.STRUCT)
    assert holder.size == kinds.sizeof(hid) == 144
    by = {m.name: m for m in holder.members}
    assert kinds.type(by["vol"].type).kind == BtfKind.VOLATILE
    assert kinds.type(kinds.resolve(by["con"].type)).name == "unsigned short"
    ptr = kinds.type(by["tagged"].type)
    assert ptr.kind == BtfKind.PTR
    tag = kinds.type(ptr.type)
    assert isinstance(tag, TypeTag) and tag.name == "user"
    assert kinds.type(kinds.resolve(ptr.type)).name == "int"
    assert isinstance(kinds.type(by["rp"].type), Restrict)
    assert kinds.type(kinds.type(by["op"].type).type) == Fwd("opaque", False)
    assert kinds.type(kinds.type(by["opu"].type).type) == Fwd("opaque_u", True)
    assert kinds.sizeof(by["arr"].type) == 48
    outer = kinds.type(by["arr"].type)
    assert isinstance(outer, Array) and outer.nelems == 3 and kinds.type(outer.type).nelems == 2
    assert kinds.sizeof(by["tagged"].type) == 8
    assert isinstance(kinds.type(by["ld"].type), Float)
    uid, u = _one(kinds, "u", BtfKind.UNION)
    assert kinds.sizeof(uid) == 8 and [m.name for m in u.members] == ["x", "f", "d"]


def test_decl_tags_and_funcs(kinds):
    fid, fn = _one(kinds, "tagged_fn", BtfKind.FUNC)
    assert fn.linkage == 0
    proto = kinds.type(fn.type)
    assert isinstance(proto, FuncProto) and [p.name for p in proto.params] == ["x", "h"]
    tags = {kinds.type(i).name: kinds.type(i) for i in range(len(kinds)) if kinds.type(i).kind == BtfKind.DECL_TAG}
    assert tags["param_tag"] == DeclTag("param_tag", fid, 0)
    assert tags["func_tag"].component_idx == -1
    assert tags["member_tag"].component_idx == 0
    _, kp = _one(kinds, "kinds", BtfKind.FUNC)
    assert kp.linkage == 1
    with pytest.raises(BTFError, match="has no size"):
        kinds.sizeof(fid)


def test_datasec_and_var(kinds):
    _, sec = _one(kinds, ".data.holder", BtfKind.DATASEC)
    var = kinds.type(sec.vars[0].type)
    assert isinstance(var, Var) and var.name == "holder_var" and sec.vars[0].size == 144


def test_types_sequence_and_bounds(kinds):
    assert kinds.types[0].kind == BtfKind.UNKN
    assert kinds.types[-1] == kinds.type(len(kinds) - 1)
    assert len(kinds.types[1:4]) == 3
    with pytest.raises(BTFError, match="out of range"):
        kinds.type(len(kinds))
    assert kinds.find("") == [] and kinds.find("no_such_type") == []


def test_raw_round_trip_is_identity(kinds):
    raw = KINDS_BTF.read_bytes()
    assert kinds.to_bytes() == raw


ALL_KINDS = [
    Int("int", 4, 1, 0, 32),                                   # 1
    Ptr(1),                                                    # 2
    Array(1, 1, 5),                                            # 3
    Struct("s", 16, [Member("a", 1, 0), Member("b", 1, 32, 3), Member("c", 2, 64)]),  # 4
    Union("u", 8, [Member("x", 1, 0), Member("y", 2, 0)]),     # 5
    Enum("e", 4, True, [EnumValue("NEG", -1), EnumValue("POS", 7)]),  # 6
    Fwd("fw", True),                                           # 7
    Typedef("td", 4),                                          # 8
    Volatile(8),                                               # 9
    Const(9),                                                  # 10
    Restrict(2),                                               # 11
    FuncProto(1, [Param("p", 2), Param("", 0)]),               # 12 (variadic)
    Func("fn", 12, 1),                                         # 13
    Var("gv", 4, 1),                                           # 14
    Datasec(".data", 16, [VarSecInfo(14, 0, 16)]),             # 15
    Float("double", 8),                                        # 16
    DeclTag("dt", 4, 1),                                       # 17
    TypeTag("tt", 1),                                          # 18
    Enum64("e64", 8, False, [EnumValue("BIG", 1 << 40), EnumValue("ALL", (1 << 64) - 1)]),  # 19
    Enum64("e64s", 8, True, [EnumValue("M", -(1 << 62))]),     # 20
]


def _build() -> Btf:
    b = Btf()
    for t in ALL_KINDS:
        b.add_type(t)
    return b


def test_built_round_trip():
    b = _build()
    assert len(b) == len(ALL_KINDS) + 1
    again = Btf.parse(b.to_bytes())
    assert len(again) == len(b)
    for i in range(len(b)):
        assert again.type(i) == b.type(i), i
    assert again.find("s") == [4] and again.find("td", BtfKind.TYPEDEF) == [8]
    assert again.sizeof(10) == 16 and again.resolve(10) == 4
    assert again.sizeof(3) == 20 and again.sizeof(14) == 16


def test_replace_keeps_ids_and_strings(kinds):
    copy = Btf.parse(kinds.to_bytes())
    sid = copy.find("bits", BtfKind.STRUCT)[0]
    copy.replace(sid, Struct("bits_renamed", 16, []))
    assert copy.find("bits", BtfKind.STRUCT) == []
    assert copy.find("bits_renamed") == [sid]
    again = Btf.parse(copy.to_bytes())
    for i in range(len(copy)):
        assert again.type(i) == copy.type(i)
    # old strings keep their offsets: the original string section is a prefix
    assert again._strings.startswith(kinds._strings)


def test_split_btf():
    base = _build()
    split = Btf(base)
    sid = split.add_type(Struct("child", 8, [Member("p", 2, 0)]))
    assert sid == len(base)
    parsed = Btf.parse(split.to_bytes(), base=base)
    assert len(parsed) == len(base) + 1
    assert parsed.type(sid) == Struct("child", 8, [Member("p", 2, 0)])
    assert parsed.type(4).name == "s"          # base types through the split
    assert parsed.find("child") == [sid] and parsed.find("s") == [4]
    assert parsed.sizeof(sid) == 8


def test_sanitize_all_features_absent():
    b = _build()
    out = sanitize(b, set())
    assert len(out) == len(b) + 1                # the enum64 placeholder
    assert out.type(14) == Int("gv", 1, 0, 0, 8)           # VAR -> INT
    assert out.type(17) == Int("dt", 1, 0, 0, 8)           # DECL_TAG -> INT
    ds = out.type(15)
    assert isinstance(ds, Struct) and ds.name == "_data" and ds.members == [Member("gv", 14, 0)]
    assert isinstance(out.type(12), Enum) and out.type(12).size == 4   # FUNC_PROTO -> ENUM
    assert out.type(13) == Typedef("fn", 12)                 # FUNC -> TYPEDEF
    assert out.type(16) == Struct("", 8, [])                 # FLOAT -> empty struct
    assert out.type(18) == Const(1)                          # TYPE_TAG -> CONST
    assert out.type(6).signed is False                       # signed ENUM loses kflag
    ph = len(b)
    assert out.type(ph) == Int("enum64_placeholder", 1, 0, 0, 8)
    assert out.type(19) == Union("e64", 8, [Member("BIG", ph, 0), Member("ALL", ph, 0)])
    Btf.parse(out.to_bytes())                                # encodes and parses back
    assert b.type(14) == ALL_KINDS[13]                       # the input is untouched


def test_sanitize_all_features_present_is_identity():
    b = _build()
    out = sanitize(b, FEATURES)
    assert out.to_bytes() == b.to_bytes()


def test_sanitize_func_global_only_and_qmark():
    b = _build()
    b.add_type(Datasec("?.struct_ops", 0, []))
    out = sanitize(b, FEATURES - {"func_global", "qmark_datasec"})
    assert out.type(13) == Func("fn", 12, 0)
    assert out.type(len(b) - 1).name == "_.struct_ops"
    with pytest.raises(ValueError):
        sanitize(b, {"bogus"})


def test_load_kernel_errors(tmp_path):
    with pytest.raises(BTFError, match="cannot read kernel BTF"):
        Btf.load_kernel(str(tmp_path / "missing"))
    elf = tmp_path / "no_btf.elf"
    elf.write_bytes((ROOT / "tests/bpf/elf_kinds.bpf.o").read_bytes()[:64])
    with pytest.raises(BTFError):
        Btf.load_kernel(str(elf))


def test_load_kernel_from_elf_and_raw_file(tmp_path):
    # an ELF with .BTF (the object) and a raw file both work
    b = Btf.load_kernel(str(KINDS_OBJ))
    assert b.find("holder")
    b2 = Btf.load_kernel(str(KINDS_BTF))
    assert b2.to_bytes() == b.to_bytes()


def _require_vmlinux() -> None:
    # a kernel without /sys/kernel/btf/vmlinux cannot run NetBee's CO-RE: fail, never skip
    assert os.path.exists(VMLINUX), f"{VMLINUX} missing: this test needs a kernel with BTF"


def test_vmlinux_parse_time():
    """Load + one find must cost <= 0.15 s. Measured as this process's CPU time (best of
    five): on a shared 2-core machine wall time mostly measures the other tenants."""
    _require_vmlinux()
    best = None
    for _ in range(5):
        btf_module._PARSED.clear()   # measure a real parse, not load_kernel's shared one
        t0 = time.process_time()
        btf = Btf.load_kernel()
        ids = btf.find("sk_buff", BtfKind.STRUCT)
        dt = time.process_time() - t0
        best = dt if best is None else min(best, dt)
    assert ids
    assert best <= 0.15, f"loading vmlinux BTF + one find took {best:.3f} s of CPU"


def test_vmlinux_finds_agree_with_names():
    """find() (sorted name offsets + string search, memoized) against names(), which
    decodes every name from the string table on its own."""
    _require_vmlinux()
    names = ["task_struct", "sk_buff", "ip_rcv", "u32", "int", "callback_head", "nf_hook_state",
             "btf_trace_netif_receive_skb", "skb_drop_reason", "len", "no_such_name_at_all"]
    btf = Btf.load_kernel()
    want = {n: [] for n in names}
    for tid, name in btf.names():
        if name in want:
            want[name].append(tid)
    assert {n: btf.find(n) for n in names} == want
    assert {n: btf.find(n) for n in names} == want          # memoized answers are the same
    assert want["sk_buff"] and want["no_such_name_at_all"] == []


def test_vmlinux_queries():
    _require_vmlinux()
    btf = Btf.load_kernel()
    assert len(btf) > 50000
    (tid,) = btf.find("task_struct", BtfKind.STRUCT)
    assert btf.sizeof(tid) > 1000
    (sid,) = btf.find("sk_buff", BtfKind.STRUCT)
    names = {m.name for m in btf.type(sid).members}
    assert {"len", "head", "data"} <= names
    reasons = btf.enum_values("skb_drop_reason")
    assert reasons["SKB_DROP_REASON_NOT_SPECIFIED"] == 2
    assert "SKB_DROP_REASON_NETFILTER_DROP" in reasons and "SKB_DROP_REASON_NO_SOCKET" in reasons
    assert btf.find("ip_rcv", BtfKind.FUNC)
    assert btf.to_bytes() == Path(VMLINUX).read_bytes()


def test_names_and_names_containing(kinds):
    pairs = list(kinds.names())
    assert pairs == [(i, kinds.type(i).name) for i in range(len(kinds)) if kinds.type(i).name]
    assert kinds.names_containing("_tag") == [(i, n) for i, n in pairs if "_tag" in n]
    assert kinds.names_containing("zzz") == []
    b = _build()
    b.add_type(Struct("foo___v1", 4, []))
    b.replace(4, Struct("s___flav", 16, []))
    assert [n for _, n in b.names_containing("___")] == ["s___flav", "foo___v1"]
    assert dict(b.names())[4] == "s___flav"
    split = Btf(b)
    sid = split.add_type(Struct("bar___x", 4, []))
    parsed = Btf.parse(split.to_bytes(), base=b)
    assert parsed.names_containing("___") == [(4, "s___flav"), (len(b) - 1, "foo___v1"), (sid, "bar___x")]
    assert list(parsed.names())[-1] == (sid, "bar___x")


def test_vmlinux_names_containing_agrees_with_names():
    _require_vmlinux()
    btf = Btf.load_kernel()
    slow = [(i, n) for i, n in btf.names() if "___" in n]
    assert btf.names_containing("___") == slow


def test_find_with_names_inside_other_strings():
    # the encoder shares suffixes ("bar" inside "foobar"): a name offset may point into the
    # middle of a string, and finds (first and memoized) stay exact
    b = Btf()
    b.add_type(Struct("foobar", 4, []))
    b.add_type(Struct("bar", 4, []))
    p = Btf.parse(b.to_bytes())
    assert len(p._strings) == len(b"\0foobar\0")
    for _ in range(8):
        assert p.find("bar") == [2] and p.find("foobar") == [1] and p.find("oobar") == []
    assert p.ids_with_prefix("foo") == [1] and p.ids_with_prefix("ba") == [2]
    assert p.ids_with_prefix("o") == []


def test_ids_with_prefix_and_find_see_edits_and_split_btf():
    """Prefix look-ups (CO-RE flavors) and finds agree with a full walk of names(), also for
    replaced and added types and for split BTF named by its base's strings."""
    base = Btf.parse(_build().to_bytes())
    base.replace(4, Struct("s___flav", 16, []))
    added = base.add_type(Struct("s___v2", 4, []))
    assert base.find("s") == [] and base.find("s___flav") == [4]
    assert base.ids_with_prefix("s___") == [4, added]
    split = Btf(Btf.parse(_build().to_bytes()))
    split.add_type(Struct("s___x", 4, []))
    split.add_type(Typedef("s", 4))          # named by a string the base already has
    parsed = Btf.parse(split.to_bytes(), base=split.base)
    for b in (base, parsed):
        for prefix in ("s", "s___", "td", "zz"):
            want = [i for i, n in b.names() if n.startswith(prefix)]
            assert b.ids_with_prefix(prefix) == want, (prefix, want)
        for name in ("s", "s___x", "td", "zz"):
            assert b.find(name) == [i for i, n in b.names() if n == name]
    with pytest.raises(ValueError):
        base.ids_with_prefix("")


def _with_types(words: list) -> bytes:
    """A raw BTF blob whose type section is `words` (u32) and whose strings are one empty one."""
    types = struct.pack(f"<{len(words)}I", *words)
    strings = b"\0"
    return struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings)) + types + strings


INT_WORDS = [0, 1 << 24, 4, 32]                   # int, 4 bytes, 32 bits
STRUCT_2 = [0, (4 << 24) | 2, 8, 0, 1, 0, 0, 1, 32]   # struct of two int members


@pytest.mark.parametrize("words, want", [
    (INT_WORDS + STRUCT_2, None),
    ([], None),
    (INT_WORDS + [0], "BTF type 2 is truncated"),                   # no info word
    (INT_WORDS + [0, 2 << 24], "BTF type 2 is truncated"),          # a pointer without its type
    (INT_WORDS + STRUCT_2[:-3], "BTF type 2 runs past the type section"),   # one member missing
    (INT_WORDS + [0, 31 << 24, 0], "BTF type 2 has unknown kind 31"),
])
def test_the_type_walk_checks_every_length(words, want):
    if want is None:
        btf = Btf.parse(_with_types(words))
        assert len(btf) == 1 + (2 if words else 0)
        if words:
            assert btf.type(2).name == "" and [m.bit_offset for m in btf.type(2).members] == [0, 32]
        return
    with pytest.raises(BTFError, match=want + "$"):
        Btf.parse(_with_types(words))
