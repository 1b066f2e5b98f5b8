"""Property tests: any well-formed set of BTF types survives to_bytes -> parse unchanged,
also byte-swapped (BTF written on a machine of the other endianness)."""
from __future__ import annotations

import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from netbee.loader.btf import (Array, Btf, Const, Datasec, DeclTag, Enum, Enum64, EnumValue, Float,
                               Func, FuncProto, Fwd, Int, Member, Param, Ptr, Restrict, Struct,
                               Typedef, TypeTag, Union, Var, VarSecInfo, Volatile)

ROOT = Path(__file__).resolve().parents[2]

NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=12)
OPT_NAMES = st.one_of(st.just(""), NAMES)
U32 = st.integers(0, 0xFFFFFFFF)
TID = st.integers(0, 40)   # ids may point anywhere: encoding does not resolve them


def _member(bitfield: bool):
    size = st.integers(1, 255) if bitfield else st.just(0)
    off = st.integers(0, 0xFFFFFF) if bitfield else U32
    return st.builds(Member, OPT_NAMES, TID, off, size)


TYPES = st.one_of(
    st.builds(Int, NAMES, st.sampled_from([1, 2, 4, 8, 16]), st.integers(0, 7), st.integers(0, 255),
              st.integers(0, 128)),
    st.builds(Ptr, TID),
    st.builds(Array, TID, TID, U32),
    st.booleans().flatmap(lambda bf: st.builds(Struct, OPT_NAMES, U32, st.lists(_member(bf), max_size=5))),
    st.booleans().flatmap(lambda bf: st.builds(Union, OPT_NAMES, U32, st.lists(_member(bf), max_size=5))),
    st.booleans().flatmap(lambda signed: st.builds(
        Enum, OPT_NAMES, st.sampled_from([1, 2, 4]), st.just(signed),
        st.lists(st.builds(EnumValue, NAMES, st.integers(-(1 << 31), (1 << 31) - 1) if signed
                           else st.integers(0, 0xFFFFFFFF)), max_size=5))),
    st.booleans().flatmap(lambda signed: st.builds(
        Enum64, OPT_NAMES, st.just(8), st.just(signed),
        st.lists(st.builds(EnumValue, NAMES, st.integers(-(1 << 63), (1 << 63) - 1) if signed
                           else st.integers(0, (1 << 64) - 1)), max_size=5))),
    st.builds(Fwd, NAMES, st.booleans()),
    st.builds(Typedef, NAMES, TID),
    st.builds(Volatile, TID), st.builds(Const, TID), st.builds(Restrict, TID),
    st.builds(TypeTag, NAMES, TID, st.booleans()),
    st.builds(Func, NAMES, TID, st.integers(0, 2)),
    st.builds(FuncProto, TID, st.lists(st.builds(Param, OPT_NAMES, TID), max_size=5)),
    st.builds(Var, NAMES, TID, st.integers(0, 2)),
    st.builds(Datasec, NAMES, U32, st.lists(st.builds(VarSecInfo, TID, U32, U32), max_size=5)),
    st.builds(Float, NAMES, st.sampled_from([2, 4, 8, 12, 16])),
    st.builds(DeclTag, NAMES, TID, st.integers(-1, 100), st.booleans()),
)


def _byteswap_btf(raw: bytes) -> bytes:
    """The same BTF as a big-endian machine would write it (strings are bytes: unchanged)."""
    hdr = struct.unpack_from("<HBBIIIII", raw)
    _magic, ver, flags, hdr_len, toff, tlen, soff, slen = hdr
    out = bytearray(struct.pack(">HBBIIIII", 0xEB9F, ver, flags, hdr_len, toff, tlen, soff, slen))
    words = struct.unpack_from(f"<{tlen // 4}I", raw, hdr_len + toff)
    out += struct.pack(f">{len(words)}I", *words)
    out += raw[hdr_len + soff:hdr_len + soff + slen]
    return bytes(out)


@settings(max_examples=200, deadline=2000, derandomize=True)
@given(st.lists(TYPES, min_size=1, max_size=25))
def test_round_trip(types):
    b = Btf()
    for t in types:
        b.add_type(t)
    raw = b.to_bytes()
    for blob in (raw, _byteswap_btf(raw)):
        again = Btf.parse(blob)
        assert len(again) == len(types) + 1
        assert [again.type(i) for i in range(1, len(again))] == types
        for i, t in enumerate(types, 1):
            if t.name:
                assert i in again.find(t.name)
        assert again.to_bytes() == raw   # swapped input is re-encoded in host order


def test_swapped_real_blob():
    raw = (ROOT / "tests/data/kinds.btf").read_bytes()
    native, swapped = Btf.parse(raw), Btf.parse(_byteswap_btf(raw))
    assert [swapped.type(i) for i in range(len(swapped))] == [native.type(i) for i in range(len(native))]
