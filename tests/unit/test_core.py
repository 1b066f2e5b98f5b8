"""CO-RE relocation (netbee/loader/core.py) on tests/bpf/core_local.bpf.o against hand-built
target BTFs whose layout is spelled out in tests/unit/core_targets.py."""
from __future__ import annotations

import struct
from typing import Dict, Tuple

import pytest

from netbee.loader import core
from netbee.loader.btf_ext import CoreRelo, CoreReloKind as K
from netbee.loader.errors import CoreRelocationError
from tests.unit import core_targets
from tests.unit.core_objects import load

INSN = struct.Struct("<BBhi")
POISON = (0x85, 0, 0, 0xBAD2310)


@pytest.fixture(scope="module")
def obj():
    return load("core_local.bpf.o")


def fixups(obj, prog: str, target) -> Dict[Tuple[K, str], list]:
    sec = obj.programs[prog]
    out: Dict[Tuple[K, str], list] = {}
    for fx in core.relocate(prog, obj.relos[sec], obj.btf, target):
        out.setdefault((fx.kind, fx.access), []).append(fx)
    return out


def value(fxs, kind: K, access: str) -> int:
    vals = {(f.target_value, f.poison) for f in fxs[(kind, access)]}
    assert len(vals) == 1, vals
    val, poison = vals.pop()
    assert not poison, fxs[(kind, access)]
    return val


def patched(obj, prog: str, target):
    sec = obj.programs[prog]
    insns = bytearray(obj.sections[sec])
    fxs = core.relocate(prog, obj.relos[sec], obj.btf, target)
    poisoned = core.apply_fixups(insns, fxs)
    return insns, fxs, poisoned


def insn(buf: bytes, i: int):
    return INSN.unpack_from(buf, i * 8)


# --- field offsets, nested access strings, arrays, anonymous members ----------------------------

@pytest.mark.parametrize("access,expected", [
    ("0:2:3:1", 32 + 3 * 16 + 0),     # s->in[3].y: array of structs, y moved to the front
    ("0:1:1:1", 16),                  # s->s2 through an anonymous union and struct
    ("0:12", 24),                     # s->ptr
    ("0:13:2", 160 + 2 * 16),         # s->grid[2] with rows of 4 ints
    ("0:8", 144),                     # s->big
    ("0:2:1:2:2", 32 + 16 + 4 + 2),   # s->in[1].tag[2]
    ("0:15:2", 228 + 8),              # s->flex[2]: flexible array indexed past nelems 0
])
def test_field_offsets_nested(obj, access, expected):
    assert value(fixups(obj, "core_offsets", core_targets.layout_b()), K.FIELD_BYTE_OFFSET, access) == expected


def test_field_offsets_other_roots(obj):
    fxs = fixups(obj, "core_offsets", core_targets.layout_b())
    assert value(fxs, K.FIELD_BYTE_OFFSET, "0:3") == 16          # nb_ctx.u
    assert value(fxs, K.FIELD_BYTE_OFFSET, "0:2") == 0           # nb_ctx.pair
    probe = fixups(obj, "core_probe", core_targets.layout_b())
    assert value(probe, K.FIELD_BYTE_OFFSET, "0:1") == 0         # nb_pair_t (typedef of anon struct).q
    assert value(probe, K.FIELD_BYTE_OFFSET, "0:2:4:1") == 32 + 4 * 16


def test_field_info_kinds(obj):
    fxs = fixups(obj, "core_fieldinfo", core_targets.layout_b())
    assert value(fxs, K.FIELD_EXISTS, "0:0") == 1
    assert value(fxs, K.FIELD_EXISTS, "0:11") == 0               # s->missing
    assert value(fxs, K.FIELD_BYTE_SIZE, "0:1:0") == 8           # s->l
    assert value(fxs, K.FIELD_BYTE_SIZE, "0:2") == 6 * 16        # whole array s->in
    assert value(fxs, K.FIELD_BYTE_SIZE, "0:2:2:2") == 6         # char tag[6]
    assert value(fxs, K.FIELD_BYTE_OFFSET, "0:2:2:2") == 32 + 2 * 16 + 4
    assert value(fxs, K.FIELD_BYTE_OFFSET, "0:13:1:3") == 160 + 16 + 12
    assert value(fxs, K.FIELD_SIGNED, "0:0") == 1                # a: long
    assert value(fxs, K.FIELD_SIGNED, "0:10") == 0               # ucount: unsigned char


# --- bitfields --------------------------------------------------------------------------------

@pytest.mark.parametrize("access,bit_off,bits,signed", [
    ("0:3", 1029, 3, 0),    # ubf1
    ("0:4", 1040, 7, 0),    # ubf2
    ("0:5", 1050, 30, 0),   # ubf3 crosses a 4-byte boundary
    ("0:6", 1088, 5, 1),    # sbf1
    ("0:7", 1093, 13, 1),   # sbf2
])
def test_bitfields(obj, access, bit_off, bits, signed):
    fxs = fixups(obj, "core_bitfields", core_targets.layout_b())
    size = value(fxs, K.FIELD_BYTE_SIZE, access)
    off = value(fxs, K.FIELD_BYTE_OFFSET, access)
    lshift = value(fxs, K.FIELD_LSHIFT_U64, access)
    rshift = value(fxs, K.FIELD_RSHIFT_U64, access)
    assert value(fxs, K.FIELD_SIGNED, access) == signed
    # the load [off, off+size) is aligned to its size and covers the whole field
    assert size in (4, 8) and off % size == 0
    assert off * 8 <= bit_off and bit_off + bits <= (off + size) * 8
    assert rshift == 64 - bits
    assert lshift == 64 - (bit_off + bits - off * 8)
    # the minimal load: a 4-byte load would not do for ubf3
    assert size == (8 if access == "0:5" else 4)


def test_bitfield_extraction_semantics(obj):
    """Reading the target bytes with the relocated values yields the field (the macro's maths)."""
    fxs = fixups(obj, "core_bitfields", core_targets.layout_b())
    mem = bytearray(256)
    field_vals = {"0:5": (1050, 30, 0x2345678A & ((1 << 30) - 1)), "0:7": (1093, 13, -1234)}
    for access, (bit_off, bits, v) in field_vals.items():
        u = v & ((1 << bits) - 1)
        whole = int.from_bytes(mem, "little") | (u << bit_off)
        mem[:] = whole.to_bytes(256, "little")
    for access, (bit_off, bits, v) in field_vals.items():
        off, size = value(fxs, K.FIELD_BYTE_OFFSET, access), value(fxs, K.FIELD_BYTE_SIZE, access)
        raw = int.from_bytes(mem[off:off + size], "little")
        x = (raw << value(fxs, K.FIELD_LSHIFT_U64, access)) & core.U64
        r = value(fxs, K.FIELD_RSHIFT_U64, access)
        if value(fxs, K.FIELD_SIGNED, access):
            x = (x - (1 << 64) if x >> 63 else x) >> r
        else:
            x >>= r
        assert x == v


# --- types and enums --------------------------------------------------------------------------

def test_type_relocations(obj):
    target = core_targets.layout_b()
    fxs = fixups(obj, "core_types", target)
    by_name = {(f.kind, f.type_name): f for fl in fxs.values() for f in fl}
    assert by_name[(K.TYPE_EXISTS, "struct nb_sample")].target_value == 1
    assert by_name[(K.TYPE_EXISTS, "struct nb_nowhere")].target_value == 0
    assert by_name[(K.TYPE_EXISTS, "enum64 nb_big")].target_value == 1
    assert by_name[(K.TYPE_SIZE, "struct nb_sample")].target_value == 232
    assert by_name[(K.TYPE_SIZE, "union nb_union")].target_value == 8
    assert by_name[(K.TYPE_SIZE, "typedef nb_pair_t")].target_value == 8
    local_id = obj.btf.find("nb_sample")[0]
    assert by_name[(K.TYPE_ID_LOCAL, "struct nb_sample")].target_value == local_id
    assert by_name[(K.TYPE_ID_TARGET, "struct nb_inner")].target_value == target.find("nb_inner")[0]
    assert by_name[(K.TYPE_MATCHES, "struct nb_inner")].target_value == 0    # tag[6] vs tag[4]
    assert by_name[(K.TYPE_MATCHES, "enum nb_color")].target_value == 0      # NB_ABSENT missing
    assert by_name[(K.TYPE_MATCHES, "typedef nb_pair_t")].target_value == 1  # members reordered
    assert not any(f.poison for fl in fxs.values() for f in fl)


def test_enum_relocations(obj):
    insns, fxs, poisoned = patched(obj, "core_enums", core_targets.layout_b())
    by = {(f.kind, f.type_name, f.access): f for f in fxs}
    assert by[(K.ENUMVAL_EXISTS, "enum nb_color", "1")].target_value == 1       # NB_GREEN___new
    assert by[(K.ENUMVAL_EXISTS, "enum nb_color", "3")].target_value == 0       # NB_ABSENT
    assert by[(K.ENUMVAL_VALUE, "enum nb_color", "2")].target_value == 40
    assert by[(K.ENUMVAL_VALUE, "enum64 nb_big", "0")].target_value == 0x500000000
    assert by[(K.ENUMVAL_VALUE, "enum nb_neg", "0")].target_value == (-9) & core.U64
    missing = by[(K.ENUMVAL_VALUE, "enum nb_color", "3")]
    assert missing.poison and "NB_ABSENT" in missing.reason
    # the 64-bit value lands in both ld_imm64 halves
    i = by[(K.ENUMVAL_VALUE, "enum64 nb_big", "0")].insn_index
    assert insn(insns, i)[0] == 0x18
    assert insn(insns, i)[3] == 0x00000000 + (0x500000000 & 0xFFFFFFFF)
    assert insn(insns, i + 1)[3] == 5
    # the poisoned enum value: an ld_imm64, so both slots become the bad call
    j = missing.insn_index
    assert insn(insns, j) == POISON and insn(insns, j + 1) == POISON
    assert [p[0] for p in poisoned] == [j]
    assert "insn #%d" % j in poisoned[0][1] and "nb_color" in poisoned[0][1] and "'3'" in poisoned[0][1]


# --- patching ---------------------------------------------------------------------------------

def test_patch_loads(obj):
    orig = obj.sections[obj.programs["core_offsets"]]
    insns, fxs, poisoned = patched(obj, "core_offsets", core_targets.layout_b())
    by = {f.access: f for f in fxs if f.type_name == "struct nb_sample"}
    flags = by["0:9"].insn_index           # u8 -> u16: offset and size patched
    assert insn(orig, flags)[0] == 0x71 and insn(insns, flags)[0] == 0x69
    assert insn(insns, flags)[2] == 152
    ucount = by["0:10"].insn_index         # u32 -> u8
    assert insn(orig, ucount)[0] == 0x61 and insn(insns, ucount)[0] == 0x71
    assert insn(insns, ucount)[2] == 154
    a = by["0:0"].insn_index               # int -> long: signed, cannot be resized: poisoned
    assert insn(insns, a) == POISON
    assert [p[0] for p in poisoned] == [a] and "not a pointer or unsigned integer" in poisoned[0][1]
    big = by["0:8"].insn_index             # same size: only the offset changes
    assert insn(insns, big)[:3] == (insn(orig, big)[0], insn(orig, big)[1], 144)
    grid = by["0:13:2"].insn_index         # ALU mov imm
    assert insn(orig, grid)[3] == 152 and insn(insns, grid)[3] == 192


def test_missing_field_exists_zero_and_access_poisoned(obj):
    insns, fxs, poisoned = patched(obj, "core_missing", core_targets.layout_b())
    exists = [f for f in fxs if f.kind == K.FIELD_EXISTS]
    assert {f.type_name: f.target_value for f in exists} == {
        "struct nb_sample": 0, "struct nb_sample___v1": 0}
    assert all(not f.poison for f in exists)
    loads = [f for f in fxs if f.kind == K.FIELD_BYTE_OFFSET and f.type_name != "struct nb_ctx"]
    assert len(loads) == 2 and all(f.poison for f in loads)
    assert sorted(p[0] for p in poisoned) == sorted(f.insn_index for f in loads)
    for f in loads:
        assert insn(insns, f.insn_index) == POISON
    msg = dict(poisoned)[loads[0].insn_index]
    assert msg == loads[0].reason
    assert "core_missing" in msg and f"insn #{loads[0].insn_index}" in msg and loads[0].access in msg


def test_flavor_matches_flavored_target(obj):
    fxs = fixups(obj, "core_missing", core_targets.layout_flavor())
    v1 = [f for f in fxs.values() for f in f if f.type_name == "struct nb_sample___v1"]
    assert {f.kind: (f.target_value, f.poison) for f in v1} == {
        K.FIELD_EXISTS: (1, False), K.FIELD_BYTE_OFFSET: (16, False)}
    # local nb_sample also finds nb_sample___v9, which lacks `missing`
    plain = [f for fl in fxs.values() for f in fl if f.type_name == "struct nb_sample"]
    assert {f.kind: f.target_value for f in plain}[K.FIELD_EXISTS] == 0


def test_essential_name():
    assert core.essential_name("sk_buff___v1") == "sk_buff"
    assert core.essential_name("a___b___c") == "a___b"
    assert core.essential_name("plain") == "plain"
    assert core.essential_name("x____y") == "x____y"     # a 4th underscore is not a separator
    assert core.essential_name("___x") == "___x"


# --- candidates must agree --------------------------------------------------------------------

def test_ambiguous_candidates_are_an_error(obj):
    with pytest.raises(CoreRelocationError) as err:
        fixups(obj, "core_offsets", core_targets.layout_two_candidates(agree=False))
    msg = str(err.value)
    assert "core_offsets" in msg and "insn #2" in msg and "nb_sample" in msg and "'0:0'" in msg
    assert "disagree" in msg


def test_agreeing_candidates_are_fine(obj):
    fxs = fixups(obj, "core_fieldinfo", core_targets.layout_two_candidates(agree=True))
    assert value(fxs, K.FIELD_EXISTS, "0:0") == 1
    assert value(fxs, K.FIELD_SIGNED, "0:0") == 1


def test_candidate_cache_prunes_like_libbpf(obj):
    """After a relocation matched some candidates, later ones for that type see only those."""
    target = core_targets.layout_two_candidates(agree=True)
    sid = obj.btf.find("nb_sample")[0]
    relos = [CoreRelo(0, sid, "0:0", K.FIELD_EXISTS), CoreRelo(8, sid, "0:0", K.FIELD_EXISTS)]
    cache: dict = {}
    core.relocate("p", relos, obj.btf, target, cand_cache=cache)
    assert cache[sid] == sorted(target.find("nb_sample") + target.find("nb_sample___dup"))


# --- errors name program, instruction, type and access string ---------------------------------

@pytest.mark.parametrize("access,kind", [
    ("0:99", K.FIELD_BYTE_OFFSET),    # no member 99
    ("0:x", K.FIELD_BYTE_OFFSET),     # malformed
    ("", K.FIELD_BYTE_OFFSET),
    ("1", K.TYPE_SIZE),               # type relocations take "0"
    ("0:2:9:0", K.FIELD_BYTE_OFFSET), # in[9] out of bounds of in[5]
    ("0:2:1", K.FIELD_SIGNED),        # signedness of an array element access
])
def test_bad_relocations_raise(obj, access, kind):
    sid = obj.btf.find("nb_sample")[0]
    with pytest.raises(CoreRelocationError) as err:
        core.relocate("myprog", [CoreRelo(8 * 7, sid, access, kind)], obj.btf, core_targets.layout_b())
    msg = str(err.value)
    assert "myprog" in msg and "insn #7" in msg and "nb_sample" in msg and repr(access) in msg


def test_anonymous_local_type_is_an_error(obj):
    anon = next(i for i in range(1, len(obj.btf))
                if obj.btf.type(i).kind.name == "STRUCT" and not obj.btf.type(i).name)
    with pytest.raises(CoreRelocationError, match="anonymous"):
        core.relocate("p", [CoreRelo(0, anon, "0:0", K.FIELD_BYTE_OFFSET)], obj.btf, core_targets.layout_b())


def test_patch_refuses_unexpected_instruction_value(obj):
    sec = obj.programs["core_offsets"]
    insns = bytearray(obj.sections[sec])
    fxs = core.relocate("core_offsets", obj.relos[sec], obj.btf, core_targets.layout_b())
    fx = next(f for f in fxs if f.access == "0:8")
    code, regs, off, imm = insn(insns, fx.insn_index)
    INSN.pack_into(insns, fx.insn_index * 8, code, regs, off + 8, imm)
    with pytest.raises(CoreRelocationError, match=r"insn #%d.*'0:8'" % fx.insn_index):
        core.apply_fixups(insns, [fx])


def test_patch_refuses_jump(obj):
    fx = core.Fixup(0, K.FIELD_BYTE_OFFSET, 0, 8, False, "", program="p", type_name="struct s", access="0:1")
    insns = bytearray(INSN.pack(0x05, 0, 0, 0))  # ja +0
    with pytest.raises(CoreRelocationError, match="opcode 0x05"):
        core.apply_fixups(insns, [fx])


# --- near misses: same names, shapes that must not match (layout_c) ----------------------------

def test_near_misses(obj):
    target = core_targets.layout_c()
    off = {(f.type_name, f.access): f for f in core.relocate(
        "core_offsets", obj.relos[obj.programs["core_offsets"]], obj.btf, target)}
    assert off[("struct nb_inner", "0:0")].poison          # int x vs int x[1]
    assert off[("struct nb_sample", "0:2:3:1")].poison     # in[3] but the target has in[3] only
    assert off[("struct nb_sample", "0:2:1:2:2")].poison   # tag[2] of a 2-element tag
    assert off[("struct nb_sample", "0:8")].poison         # long long vs struct
    assert off[("struct nb_sample", "0:13:2")].poison      # grid[2] of a 2-row grid
    widened = off[("struct nb_sample", "0:10")]            # u32 -> u64: unsigned, may widen
    assert (widened.target_value, widened.local_size, widened.target_size) == (32, 4, 8)
    assert not widened.bad_size_change
    info = {(f.kind, f.access): f for f in core.relocate(
        "core_fieldinfo", obj.relos[obj.programs["core_fieldinfo"]], obj.btf, target)}
    assert info[(K.FIELD_SIGNED, "0:0")].target_value == 0  # a is unsigned there
    assert info[(K.FIELD_EXISTS, "0:11")].target_value == 1
    assert info[(K.FIELD_BYTE_SIZE, "0:2")].target_value == 3 * 12
    enums = {(f.kind, f.type_name, f.access): f for f in core.relocate(
        "core_enums", obj.relos[obj.programs["core_enums"]], obj.btf, target)}
    # enum <-> enum64 are one family; 64-bit signed values are kept whole
    assert enums[(K.ENUMVAL_VALUE, "enum64 nb_big", "0")].target_value == 7
    assert enums[(K.ENUMVAL_VALUE, "enum nb_color", "2")].target_value == (-(1 << 40)) & core.U64
    assert enums[(K.ENUMVAL_VALUE, "enum nb_neg", "0")].poison
