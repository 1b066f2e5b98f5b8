"""Hand-built target BTFs ("another kernel") for the CO-RE tests of tests/bpf/core_local.bpf.c.

Every offset is chosen here, in bits, so the expected relocation values in the tests follow from
this file and not from core.py."""
from __future__ import annotations

from netbee.loader.btf import (Array, Btf, Enum, Enum64, EnumValue, Int, Member, Ptr, Struct,
                               Typedef, Union)


class _Builder:
    def __init__(self) -> None:
        self.btf = Btf()
        b = self.btf
        self.int = b.add_type(Int("int", 4, 1, 0, 32))
        self.uint = b.add_type(Int("unsigned int", 4, 0, 0, 32))
        self.long = b.add_type(Int("long", 8, 1, 0, 64))
        self.short = b.add_type(Int("short", 2, 1, 0, 16))
        self.ushort = b.add_type(Int("unsigned short", 2, 0, 0, 16))
        self.uchar = b.add_type(Int("unsigned char", 1, 0, 0, 8))
        self.char = b.add_type(Int("char", 1, 1, 0, 8))
        self.llong = b.add_type(Int("long long", 8, 1, 0, 64))
        self.u64 = b.add_type(Int("unsigned long long", 8, 0, 0, 64))

    def array(self, elem: int, n: int) -> int:
        return self.btf.add_type(Array(elem, self.int, n))

    def ptr(self, to: int) -> int:
        return self.btf.add_type(Ptr(to))


def layout_b() -> Btf:
    """Every nb_* type moved around, resized, renamed by flavor, or removed."""
    k = _Builder()
    b = k.btf
    inner = b.add_type(Struct("nb_inner", 16, [
        Member("y", k.int, 0),
        Member("tag", k.array(k.char, 6), 32),
        Member("x", k.int, 96),
    ]))
    anon_s = b.add_type(Struct("", 4, [Member("s2", k.short, 0), Member("s1", k.short, 16)]))
    anon_u = b.add_type(Union("", 8, [Member("l", k.long, 0), Member("", anon_s, 0)]))
    row = k.array(k.int, 4)
    sample = b.add_type(Struct("nb_sample", 232, [
        Member("pad", k.long, 0),
        Member("a", k.long, 64),                   # int -> long: a load of it cannot be resized
        Member("", anon_u, 128),
        Member("ptr", k.ptr(inner), 192),
        Member("in", k.array(inner, 6), 256),
        Member("ubf1", k.uint, 1029, 3),
        Member("ubf2", k.uint, 1040, 7),
        Member("ubf3", k.uint, 1050, 30),          # bits 1050..1079: needs an 8-byte load
        Member("sbf1", k.int, 1088, 5),
        Member("sbf2", k.int, 1093, 13),
        Member("big", k.llong, 1152),
        Member("flags", k.ushort, 1216),           # u8 -> u16: load widened
        Member("ucount", k.uchar, 1232),           # u32 -> u8: load narrowed
        Member("grid", k.array(row, 4), 1280),
        Member("flex_n", k.int, 1792),
        Member("flex", k.array(k.int, 0), 1824),
    ]))
    union = b.add_type(Union("nb_union", 8, [Member("u", k.u64, 0), Member("i", k.int, 0)]))
    pair = b.add_type(Struct("", 8, [Member("q", k.int, 0), Member("p", k.int, 32)]))
    pair_t = b.add_type(Typedef("nb_pair_t", pair))
    b.add_type(Struct("nb_ctx", 32, [
        Member("pair", k.ptr(pair_t), 0),
        Member("s", k.ptr(sample), 64),
        Member("u", k.ptr(union), 128),
        Member("v1", k.ptr(sample), 192),
    ]))
    b.add_type(Enum("nb_color", 4, False, [
        EnumValue("NB_BLUE", 40), EnumValue("NB_RED", 10), EnumValue("NB_GREEN___new", 20)]))
    b.add_type(Enum64("nb_big", 8, False, [EnumValue("NB_BIG_B", 3), EnumValue("NB_BIG_A", 0x500000000)]))
    b.add_type(Enum("nb_neg", 4, True, [EnumValue("NB_NEG_ZERO", 0), EnumValue("NB_NEG", -9)]))
    return b


def layout_flavor() -> Btf:
    """Only a flavored nb_sample that has the field nb_sample___v1 wants."""
    k = _Builder()
    k.btf.add_type(Struct("nb_sample___v9", 24, [
        Member("pad", k.long, 0), Member("a", k.int, 64), Member("renamed", k.long, 128)]))
    return k.btf


def layout_two_candidates(agree: bool) -> Btf:
    """nb_sample twice (plain and flavored): field `a` at the same or at different offsets."""
    k = _Builder()
    k.btf.add_type(Struct("nb_sample", 8, [Member("a", k.int, 0), Member("b", k.int, 32)]))
    k.btf.add_type(Struct("nb_sample___dup", 8, [
        Member("a", k.int, 0 if agree else 32), Member("c", k.int, 0 if not agree else 32)]))
    return k.btf


def layout_c() -> Btf:
    """Shapes that must NOT match: same names, incompatible kinds, shorter arrays, enum sizes."""
    k = _Builder()
    b = k.btf
    inner = b.add_type(Struct("nb_inner", 12, [
        Member("x", k.array(k.int, 1), 0),          # int -> int[1]: not compatible with int
        Member("y", k.ptr(k.int), 32),              # int -> pointer: not compatible
        Member("tag", k.array(k.uchar, 2), 96),     # char[4] -> unsigned char[2]: compatible, shorter
    ]))
    big = b.add_type(Struct("nb_big_t", 8, [Member("v", k.long, 0)]))
    b.add_type(Struct("nb_sample", 200, [
        Member("a", k.uint, 0),                     # int -> unsigned int: compatible, unsigned
        Member("in", k.array(inner, 3), 32),        # in[5] -> in[3]: in[3] and in[4] do not exist
        Member("big", big, 128),                    # long long -> struct: not compatible
        Member("flags", k.uchar, 192),
        Member("ucount", k.u64, 256),               # u32 -> u64: load widened
        Member("grid", k.array(k.array(k.int, 2), 2), 320),  # grid[2][...] out of range
        Member("flex_n", k.int, 1024),
        Member("flex", k.array(k.int, 0), 1056),
        Member("missing", k.int, 1088),             # present here
    ]))
    b.add_type(Enum("nb_big", 4, False, [EnumValue("NB_BIG_A", 7)]))   # enum64 locally, enum here
    b.add_type(Enum64("nb_color", 8, True, [
        EnumValue("NB_RED", -1), EnumValue("NB_GREEN", 2), EnumValue("NB_BLUE", -(1 << 40)),
        EnumValue("NB_ABSENT", 9)]))
    return b
