"""Kernel text addresses -> "sym+0xoff [module]", from /proc/kallsyms (or any file object).

The file is not guaranteed to be sorted (module symbols follow the core kernel in load order), so
we sort by address ourselves and binary-search. Loaded lazily: only --stack needs it.
"""
from __future__ import annotations

import bisect
from typing import IO, List, Optional, Tuple

TEXT_TYPES = frozenset("tT")
# Beyond this distance from the nearest symbol an address is not attributed to it.
MAX_OFFSET = 1 << 20


def parse(f: IO[str]) -> Tuple[List[int], List[str]]:
    """(sorted addresses, matching "sym" or "sym [mod]" labels); text symbols only."""
    entries = []
    for line in f:
        parts = line.split()
        if len(parts) < 3 or parts[1] not in TEXT_TYPES:
            continue
        try:
            addr = int(parts[0], 16)
        except ValueError:
            continue
        if addr == 0:  # kptr_restrict hides addresses: nothing to resolve with
            continue
        label = parts[2] if len(parts) < 4 else f"{parts[2]} {parts[3]}"
        entries.append((addr, label))
    entries.sort()
    return [a for a, _ in entries], [n for _, n in entries]


class Kallsyms:
    """resolve(addr) -> "ip_rcv+0x1c" or "nft_do_chain+0x3a [nf_tables]"; unknown -> "0x..."."""

    def __init__(self, path: str = "/proc/kallsyms", f: Optional[IO[str]] = None) -> None:
        self.path = path
        self._file = f
        self._addrs: Optional[List[int]] = None
        self._labels: List[str] = []

    def _load(self) -> None:
        if self._file is not None:
            self._addrs, self._labels = parse(self._file)
            return
        try:
            with open(self.path, encoding="ascii", errors="replace") as f:
                self._addrs, self._labels = parse(f)
        except OSError:
            self._addrs, self._labels = [], []

    def __len__(self) -> int:
        if self._addrs is None:
            self._load()
        return len(self._labels)

    def resolve(self, addr: int) -> str:
        if self._addrs is None:
            self._load()
        assert self._addrs is not None
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0 or addr - self._addrs[i] > MAX_OFFSET:
            return f"0x{addr:x}"
        label = self._labels[i]
        name, _, mod = label.partition(" ")
        return f"{name}+0x{addr - self._addrs[i]:x}" + (f" {mod}" if mod else "")
