"""record_split: the Struct derived from the construct layout unpacks what construct parses."""
from __future__ import annotations

import pytest
from construct import Bytes, Int8un, Int16un, Int32un, Padding, Struct
from hypothesis import given, settings, strategies as st

from netbee import abi
from netbee.record_split import KEY, split_record
from netbee.render_records import JSON_KEYS, JSON_SLOTS, JSON_SPLIT


def _check(split, layout, slots, keys, buf: bytes) -> None:
    parsed = layout.parse(buf)
    values = split.struct.unpack_from(buf)
    assert len(values) == len(split.items)
    runs = iter(split.runs)
    for name, value in zip(split.items, values):
        if name == KEY:
            start, end = next(runs)
            assert value == buf[start:end]
        else:
            assert name in slots and value == parsed[name]
    offsets = {name: (off, size) for name, off, size in abi.field_layout(layout)}
    for name in keys:   # every key field lies inside a run
        off, size = offsets[name]
        assert any(start <= off and off + size <= end for start, end in split.runs), name
    for name in slots:  # and no slot does
        off, size = offsets[name]
        assert not any(off < end and start < off + size for start, end in split.runs), name


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=abi.EVENT_SIZE, max_size=abi.EVENT_SIZE))
def test_json_split_equals_construct_parse(buf: bytes) -> None:
    _check(JSON_SPLIT, abi.EVENT, JSON_SLOTS, JSON_KEYS, buf)


def test_every_field_of_the_layout_is_a_slot_or_key_or_named_as_unused() -> None:
    """A field added to struct nb_event must be placed (slot, key or knowingly skipped)."""
    from netbee.render_records import JSON_UNUSED
    names = [name for name, _, _ in abi.field_layout(abi.EVENT)]
    assert sorted(names) == sorted(JSON_SLOTS + JSON_KEYS + JSON_UNUSED)


LAYOUT = Struct("a" / Int8un, "b" / Int16un, "c" / Int32un, "d" / Bytes(3), "e" / Int8un,
                "f" / Bytes(2), Padding(3))


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=LAYOUT.sizeof(), max_size=LAYOUT.sizeof()),
       st.lists(st.sampled_from("abcdef"), unique=True), st.data())
def test_any_split_of_a_small_layout(buf: bytes, chosen, data) -> None:
    numbers = [n for n in chosen if n in "abce"]
    slots = data.draw(st.lists(st.sampled_from(numbers), unique=True)) if numbers else []
    keys = [n for n in chosen if n not in slots]
    split = split_record(LAYOUT, slots, keys)
    assert split.struct.size == LAYOUT.sizeof()
    _check(split, LAYOUT, slots, keys, buf)


def test_a_skipped_field_between_keys_joins_the_run() -> None:
    split = split_record(LAYOUT, ["e"], ["b", "d"])
    assert split.items == (KEY, "e") and split.runs == ((1, 10),)   # b, c (bridged), d


def test_bad_names() -> None:
    with pytest.raises(ValueError):
        split_record(LAYOUT, ["zz"], [])
    with pytest.raises(ValueError):
        split_record(LAYOUT, ["d"], [])     # bytes cannot be a slot
    with pytest.raises(ValueError):
        split_record(LAYOUT, ["a"], ["a"])
