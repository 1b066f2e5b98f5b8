"""syscall.release_free_heap: free memory in the middle of the C heap leaves the resident set
only when trimmed (the tracer relies on it to lower the command's peak RSS)."""
from __future__ import annotations

from netbee.loader import syscall


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_freed_heap_pages_leave_the_resident_set():
    chunks = [bytearray(b"x" * 60_000) for _ in range(800)]   # ~46 MB, below the mmap threshold
    sentinel = bytearray(b"y" * 60_000)                         # keeps the heap top in use
    del chunks
    before = _rss_kb()
    assert syscall.release_free_heap() is True                  # glibc here
    after = _rss_kb()
    assert before - after > 20_000, (before, after)
    assert sentinel[0] == ord("y")
