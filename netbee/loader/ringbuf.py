"""BPF ring buffer consumer.

RingCursor is the cursor arithmetic over three memoryviews (consumer position, producer position,
data area mapped twice), with no system calls, so it can be tested on bytearrays. RingBufReader does
the mmap and epoll around it.

Memory layout the kernel exposes on the map fd: page 0 = consumer page (we write consumer_pos),
page 1 = producer page (producer_pos), then the data area of max_entries bytes mapped twice in a row,
so a record that wraps around the end is still contiguous in our view.
"""
from __future__ import annotations

import mmap
import select
import sys
from typing import Any, Iterator, List, Optional, Sequence, Union, overload

from netbee.loader import syscall as sc

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HDR_SIZE = 8
PAGE = mmap.PAGESIZE

Record = Union[memoryview, bytes]


class RecordBlock(Sequence[bytes]):
    """Records of one length as the ring buffer holds them: one bytes object, a header of HDR_SIZE
    bytes before each record, records `stride` bytes apart. A consumer can walk it in C
    (struct.iter_unpack over `data`, or data[HDR_SIZE + offset::stride] for one byte of every
    record); indexing and iteration give each record as bytes."""

    __slots__ = ("data", "length", "stride", "count")

    def __init__(self, data: bytes, length: int, stride: int, count: int) -> None:
        if count * stride != len(data) or length + HDR_SIZE > stride:
            raise ValueError(f"{len(data)} bytes do not hold {count} records of {length} every {stride}")
        self.data, self.length, self.stride, self.count = data, length, stride, count

    def __len__(self) -> int:
        return self.count

    @overload
    def __getitem__(self, i: int) -> bytes: ...
    @overload
    def __getitem__(self, i: slice) -> List[bytes]: ...

    def __getitem__(self, i: Union[int, slice]) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.count))]
        if i < 0:
            i += self.count
        if not 0 <= i < self.count:
            raise IndexError("record index out of range")
        start = i * self.stride + HDR_SIZE
        return self.data[start:start + self.length]

    def __iter__(self) -> Iterator[bytes]:
        starts = range(HDR_SIZE, len(self.data), self.stride)
        return map(self.data.__getitem__, map(slice, starts, range(HDR_SIZE + self.length, len(self.data) + 1,
                                                                   self.stride)))

    def column(self, offset: int) -> bytes:
        """The byte at `offset` of every record."""
        return self.data[HDR_SIZE + offset::self.stride]


class RingCursor:
    """Reads committed records between consumer_pos and producer_pos.

    read_batch() gathers every record available now (stopping at one still BUSY, skipping
    DISCARDed ones) without publishing anything; commit() then stores the consumer position once,
    which hands the space back to the kernel. Views returned by read_batch stay valid until then."""

    def __init__(self, consumer: memoryview, producer: memoryview, data: memoryview, size: int) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError(f"ring size {size} is not a power of two")
        if len(data) < 2 * size:
            raise ValueError("data view must cover the double-mapped area (2 x size)")
        self._cons = consumer.cast("B").cast("Q")  # an aligned 8-byte load/store each
        self._prod = producer.cast("B").cast("Q")
        self._data = data
        self._hdr = data.cast("B").cast("I")
        self.size = size
        self._mask = size - 1
        self._pending: Optional[int] = None
        self.discarded = 0

    @property
    def consumer_pos(self) -> int:
        return self._cons[0]

    @property
    def producer_pos(self) -> int:
        return self._prod[0]

    def available(self) -> bool:
        pos = self._pending if self._pending is not None else self._cons[0]
        return self._prod[0] > pos

    def read_batch(self, limit: Optional[int] = None, copy: bool = False) -> List[Record]:
        """copy=True returns bytes: cheaper than keeping thousands of views alive (the garbage
        collector walks every live memoryview; 4 MiB of records cost 13 us each as views, 0.4 as bytes)."""
        pos = self._pending if self._pending is not None else self._cons[0]
        out: List[Record] = []
        append = out.append
        # Locals, not attributes, in the loop: it runs once per record on the hot path.
        left = sys.maxsize if limit is None else limit
        mask, hdrs, data, prod_view = self._mask, self._hdr, self._data, self._prod
        prod = prod_view[0]
        while left > 0:
            if pos >= prod:
                prod = prod_view[0]  # records committed while we drained join this batch
                if pos >= prod:
                    break
            off = pos & mask
            hdr = hdrs[off >> 2]
            if hdr & BUSY_BIT:
                break  # reserved but not committed yet: the records after it must wait too
            length = hdr & ~(BUSY_BIT | DISCARD_BIT)
            if hdr & DISCARD_BIT:
                self.discarded += 1
            else:
                start = off + HDR_SIZE
                append(data[start:start + length].tobytes() if copy else data[start:start + length])
                left -= 1
            pos += (length + HDR_SIZE + 7) & ~7
        self._pending = pos
        return out

    def read_block(self, limit: Optional[int] = None) -> Union[RecordBlock, List[Record]]:
        """read_batch(limit, copy=True), but the committed records from here on that all have the
        length of the first (the kernel writes nothing else unless stacks follow events) come as
        one RecordBlock: one copy, no Python work per record. Anything else (a record still busy,
        a discarded one, another length) ends the block; when the first record is such a one,
        this is read_batch's list."""
        pos = self._pending if self._pending is not None else self._cons[0]
        prod = self._prod[0]
        if pos >= prod:
            return []
        off = pos & self._mask
        length = self._hdr[off >> 2]     # BUSY or DISCARD set: not a length any record has
        stride = (length + HDR_SIZE + 7) & ~7
        n = min((prod - pos) // stride, sys.maxsize if limit is None else limit)
        if length & (BUSY_BIT | DISCARD_BIT) or n < 2:
            return self.read_batch(limit, copy=True)
        # every header at this stride; up to the first that differs they are all real headers
        heads = self._hdr[off >> 2:(off + n * stride) >> 2:stride >> 2].tolist()
        if heads.count(length) != n:
            n = next(i for i, h in enumerate(heads) if h != length)
        block = self._data[off:off + n * stride].tobytes()
        self._pending = pos + n * stride
        return RecordBlock(block, length, stride, n)

    def skip_all(self) -> int:
        """Drop everything queued (a reused ring buffer's records of an earlier run, read before
        anything is attached); returns the bytes skipped."""
        skipped = self._prod[0] - self._cons[0]
        self._cons[0] = self._prod[0]
        self._pending = None
        return skipped

    def commit(self) -> None:
        """Publish how far we read (one store per batch)."""
        if self._pending is not None:
            self._cons[0] = self._pending
            self._pending = None

    def release(self) -> None:
        for v in (self._cons, self._prod, self._hdr):
            v.release()


class RingBufReader(sc.Closeable):
    """Reader over a BPF_MAP_TYPE_RINGBUF map (a maps.Map or (fd, size))."""

    close_on_gc = True

    def __init__(self, ringbuf: Any, size: Optional[int] = None) -> None:
        fd = ringbuf if isinstance(ringbuf, int) else ringbuf.fd
        size = size if size is not None else ringbuf.max_entries
        self._cons_mm = mmap.mmap(fd, PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        try:
            self._prod_mm = mmap.mmap(fd, PAGE + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=PAGE)
        except BaseException:
            self._cons_mm.close()
            raise
        self._views = [memoryview(self._cons_mm)[:8], memoryview(self._prod_mm)[:8],
                       memoryview(self._prod_mm)[PAGE:]]
        self.cursor = RingCursor(self._views[0], self._views[1], self._views[2], size)
        self._ep = select.epoll()
        self._ep.register(fd, select.EPOLLIN)
        self._closed = False

    def wait(self, timeout: Optional[float]) -> bool:
        """True when records are available, waiting up to timeout seconds (None = forever)."""
        if self.cursor.available():
            return True
        self._ep.poll(-1 if timeout is None else timeout)
        return self.cursor.available()

    def read(self, timeout: Optional[float] = 0.0, copy: bool = True,
             limit: Optional[int] = None) -> List[Record]:
        """One batch of records. With copy=True they are bytes and the space is returned to the
        kernel at once; with copy=False they are views into the ring, valid until the next read()."""
        self.cursor.commit()
        if not self.wait(timeout):
            return []
        batch = self.cursor.read_batch(limit, copy=copy)
        if copy:
            self.cursor.commit()
        return batch

    def read_block(self, timeout: Optional[float] = 0.0,
                   limit: Optional[int] = None) -> Union[RecordBlock, List[Record]]:
        """read(timeout, copy=True, limit), records of one length as a RecordBlock (RingCursor.read_block)."""
        self.cursor.commit()
        if not self.wait(timeout):
            return []
        batch = self.cursor.read_block(limit)
        self.cursor.commit()
        return batch

    def __iter__(self) -> Iterator[bytes]:
        """Records forever (until close); for tests and simple consumers."""
        while not self._closed:
            yield from self.read(timeout=0.1)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._ep.close()
            self.cursor.release()
            for v in self._views:
                v.release()
            for mm in (self._cons_mm, self._prod_mm):
                try:
                    mm.close()
                except BufferError:
                    pass  # a caller still holds a record view; the mapping goes with it
        except Exception:
            pass

