"""Ring buffer cursor logic on bytearrays: BUSY, DISCARD, alignment, wrap-around, batching."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st

from netbee.loader.ringbuf import BUSY_BIT, DISCARD_BIT, RingCursor


class FakeRing:
    """A kernel-side producer writing into a double-mapped data area emulated by mirroring."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.cons = bytearray(8)
        self.prod = bytearray(8)
        self.data = bytearray(2 * size)
        self.cursor = RingCursor(memoryview(self.cons), memoryview(self.prod), memoryview(self.data), size)
        self.head = 0

    def _put(self, pos: int, blob: bytes) -> None:
        for i, b in enumerate(blob):
            j = (pos + i) % self.size
            self.data[j] = b
            self.data[j + self.size] = b

    def reserve(self, payload: bytes) -> int:
        """Writes a BUSY record; returns its position. Advances the producer like the kernel."""
        pos = self.head
        self._put(pos, struct.pack("=II", len(payload) | BUSY_BIT, 0) + payload)
        self.head += (len(payload) + 8 + 7) & ~7
        assert self.head - struct.unpack("=Q", self.cons)[0] <= self.size, "producer overran consumer"
        struct.pack_into("=Q", self.prod, 0, self.head)
        return pos

    def commit(self, pos: int, discard: bool = False) -> None:
        (hdr,) = struct.unpack_from("=I", self.data, pos % self.size)
        hdr &= ~BUSY_BIT
        self._put(pos, struct.pack("=I", hdr | (DISCARD_BIT if discard else 0)))

    def output(self, payload: bytes) -> None:
        self.commit(self.reserve(payload))


def test_records_in_order_and_consumer_stored_once_per_batch() -> None:
    r = FakeRing(64)
    r.output(b"abc")
    r.output(b"0123456789")
    batch = r.cursor.read_batch()
    assert [bytes(x) for x in batch] == [b"abc", b"0123456789"]
    assert r.cursor.consumer_pos == 0  # not published until commit
    r.cursor.commit()
    assert r.cursor.consumer_pos == 8 + 8 + 8 + 16  # 8-byte aligned records
    assert r.cursor.read_batch() == []


def test_busy_record_blocks_later_ones() -> None:
    r = FakeRing(128)
    r.output(b"first")
    busy = r.reserve(b"second")
    r.output(b"third")
    assert [bytes(x) for x in r.cursor.read_batch()] == [b"first"]
    r.cursor.commit()
    assert r.cursor.read_batch() == []
    r.commit(busy)
    assert [bytes(x) for x in r.cursor.read_batch()] == [b"second", b"third"]


def test_discarded_records_are_skipped_and_counted() -> None:
    r = FakeRing(128)
    p = r.reserve(b"gone")
    r.output(b"kept")
    r.commit(p, discard=True)
    assert [bytes(x) for x in r.cursor.read_batch()] == [b"kept"]
    assert r.cursor.discarded == 1


def test_wrap_around_record_is_contiguous() -> None:
    r = FakeRing(64)
    r.output(b"x" * 40)  # 48 bytes
    r.cursor.read_batch()
    r.cursor.commit()
    r.output(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")  # header at 48, payload wraps past 64
    (rec,) = r.cursor.read_batch()
    assert bytes(rec) == b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    r.cursor.commit()
    assert r.cursor.consumer_pos == 48 + 40


def test_limit_and_resume_without_commit() -> None:
    r = FakeRing(256)
    for i in range(5):
        r.output(bytes([i]) * 3)
    assert [bytes(x) for x in r.cursor.read_batch(limit=2)] == [b"\0" * 3, b"\1" * 3]
    assert [bytes(x) for x in r.cursor.read_batch()] == [bytes([i]) * 3 for i in (2, 3, 4)]
    r.cursor.commit()
    assert r.cursor.consumer_pos == 5 * 16


def test_rejects_bad_geometry() -> None:
    with pytest.raises(ValueError):
        RingCursor(memoryview(bytearray(8)), memoryview(bytearray(8)), memoryview(bytearray(96)), 48)
    with pytest.raises(ValueError):
        RingCursor(memoryview(bytearray(8)), memoryview(bytearray(8)), memoryview(bytearray(64)), 64)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=0, max_size=40), st.booleans()), min_size=1, max_size=60),
       st.integers(min_value=1, max_value=7))
def test_random_streams_through_small_ring(items, every) -> None:
    """Every committed record comes out once, in order, across many wrap-arounds."""
    r = FakeRing(128)
    expect, got = [], []
    for n, (payload, discard) in enumerate(items):
        if r.head + ((len(payload) + 15) & ~7) - r.cursor.consumer_pos > r.size:
            got += [bytes(x) for x in r.cursor.read_batch()]
            r.cursor.commit()
        p = r.reserve(payload)
        r.commit(p, discard)
        if not discard:
            expect.append(payload)
        if n % every == 0:
            got += [bytes(x) for x in r.cursor.read_batch()]
            r.cursor.commit()
    got += [bytes(x) for x in r.cursor.read_batch()]
    r.cursor.commit()
    assert got == expect
    assert r.cursor.consumer_pos == r.head


def test_copy_mode_returns_bytes_that_survive_reuse() -> None:
    r = FakeRing(64)
    r.output(b"one")
    (rec,) = r.cursor.read_batch(copy=True)
    assert isinstance(rec, bytes) and rec == b"one"
    r.cursor.commit()
    r.output(b"two" * 10)  # overwrites the area "one" lived in
    assert rec == b"one"


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([b"x" * 12, b"y" * 12, b"z" * 5, b"w" * 20]),
                          st.sampled_from(["commit", "commit", "commit", "discard", "busy"])),
                min_size=1, max_size=40),
       st.integers(min_value=1, max_value=9), st.one_of(st.none(), st.integers(min_value=1, max_value=5)))
def test_read_block_gives_what_read_batch_gives(items, every, limit) -> None:
    """read_block: the same records in the same order as read_batch(copy=True), a run of one
    length as a RecordBlock; a busy record holds back everything after it, across wrap-arounds."""
    from netbee.loader.ringbuf import RecordBlock
    r = FakeRing(256)
    expect, got, busy = [], [], []

    def drain(final: bool = False) -> None:
        while True:
            batch = r.cursor.read_block(limit)
            if limit is not None:
                assert len(batch) <= limit
            if isinstance(batch, RecordBlock):
                assert len({len(x) for x in batch}) == 1
                assert batch.data[8:8 + batch.length] == batch[0] and batch[-1] == list(batch)[-1]
            got.extend(bytes(x) for x in batch)
            r.cursor.commit()
            if not batch or not final:
                return

    for n, (payload, what) in enumerate(items):
        if r.head + ((len(payload) + 15) & ~7) - r.cursor.consumer_pos > r.size:
            for p, pay in busy:      # the producer finishes what it reserved before wrapping on
                r.commit(p)
                expect.append(pay)
            busy = []
            drain(final=True)
        p = r.reserve(payload)
        if what == "busy" or busy:
            busy.append((p, payload))
        else:
            r.commit(p, what == "discard")
            if what != "discard":
                expect.append(payload)
        if n % every == 0:
            drain()
    for p, pay in busy:
        r.commit(p)
        expect.append(pay)
    drain(final=True)
    assert got == expect
    assert r.cursor.consumer_pos == r.head


def test_record_block_indexing_and_columns() -> None:
    from netbee.loader.ringbuf import RecordBlock
    data = b"".join(struct.pack("=II", 3, 0) + bytes([i, 10 + i, 20 + i]) + bytes(5) for i in range(4))
    b = RecordBlock(data, 3, 16, 4)
    assert list(b) == [bytes([i, 10 + i, 20 + i]) for i in range(4)]
    assert b[-1] == b[3] == bytes([3, 13, 23]) and b[1:3] == [b[1], b[2]] and len(b) == 4
    assert b.column(1) == bytes([10, 11, 12, 13])
    with pytest.raises(IndexError):
        b[4]
    with pytest.raises(ValueError):
        RecordBlock(data, 9, 16, 4)
