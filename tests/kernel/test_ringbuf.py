"""Ring buffer end to end: a program writes records, the reader gets them (epoll, wrap-around)."""
from __future__ import annotations

import os
import struct
import threading
import time

import pytest

from netbee.loader import links as L
from netbee.loader import maps as M
from netbee.loader import programs as P
from netbee.loader.ringbuf import RingBufReader
from tests.kernel.test_links import rename_self
from tests.kernel.test_programs import ringbuf_pid_prog

pytestmark = pytest.mark.kernel


def _mine(recs) -> int:
    me = (os.getpid() << 32) | threading.get_native_id()
    return sum(1 for r in recs if struct.unpack("=Q", bytes(r))[0] == me)


@pytest.fixture
def ring_setup(request):
    size = getattr(request, "param", 1 << 16)
    rb = M.Map("nbk_rb", M.MapType.RINGBUF, 0, 0, size)
    prog = P.Program("nbk_rbprog", "raw_tp", ringbuf_pid_prog(rb.fd), attach_target="task_rename")
    link = L.attach(prog)
    reader = RingBufReader(rb)
    yield rb, reader
    reader.close()
    link.close()
    prog.close()
    rb.close()


def test_program_writes_reader_reads(ring_setup) -> None:
    _, reader = ring_setup
    rename_self(5)  # five renames and one back: six task_rename events
    recs = reader.read(timeout=1.0)
    assert _mine(recs) == 6
    assert all(len(r) == 8 for r in recs)


def test_epoll_wakes_up_the_reader(ring_setup) -> None:
    _, reader = ring_setup
    while reader.read(timeout=0):
        pass
    t0 = time.monotonic()

    def later() -> None:
        time.sleep(0.3)
        rename_self(1)
    th = threading.Thread(target=later)
    th.start()
    me = (os.getpid() << 32) | th.native_id
    # Reads with a long timeout: epoll must wake the reader when the record lands (~0.3 s), long
    # before the timeout; without the wake-up the first read sleeps the full 20 s. The bound
    # checks that mechanism (woken, not timed out), not a speed: a loaded machine still passes.
    # Other tasks' renames may wake it earlier, hence the loop.
    got = []
    while not got and time.monotonic() - t0 < 20:
        got = [r for r in reader.read(timeout=20.0) if struct.unpack("=Q", r)[0] == me]
    elapsed = time.monotonic() - t0
    th.join()
    assert got, "no record from the renaming thread"
    assert 0.25 < elapsed < 15.0, elapsed


@pytest.mark.parametrize("ring_setup", [4096], indirect=True)
def test_small_ring_wraps_many_times(ring_setup) -> None:
    _, reader = ring_setup
    total = 0
    for _ in range(40):  # 40 x 51 records of 16 bytes: about 8 wraps of a 4 KiB ring
        rename_self(50)
        total += _mine(reader.read(timeout=0.5, copy=False))
    total += _mine(reader.read(timeout=0))
    assert total == 40 * 51
    assert reader.cursor.consumer_pos >= 40 * 51 * 16 > 7 * 4096


def test_close_is_idempotent_with_views_outstanding(ring_setup) -> None:
    _, reader = ring_setup
    rename_self(1)
    views = reader.read(timeout=1.0, copy=False)
    assert views
    reader.close()
    reader.close()
