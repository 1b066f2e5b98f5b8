"""/proc/kallsyms, both ways: addresses -> "sym+0xoff [module]" (Kallsyms, for call stacks) and
"does this function exist, under which clone name" (SymbolNames, for choosing attach targets).

The file is not guaranteed to be sorted (module symbols follow the core kernel in load order), so
we sort by address ourselves and binary-search. Loaded lazily: only --stack needs it.
"""
from __future__ import annotations

import bisect
from typing import IO, List, Optional, Tuple

TEXT_TYPES = frozenset("tT")
# Beyond this distance from the nearest symbol an address is not attributed to it.
MAX_OFFSET = 1 << 20
KALLSYMS = "/proc/kallsyms"


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

    def __init__(self, path: str = KALLSYMS, f: Optional[IO[str]] = None) -> None:
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


class SymbolNames:
    """Which text symbols exist, from one read of /proc/kallsyms (about 40 ms), searched with find().

    Only a handful of names are looked up per run, so no index is built.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data

    @classmethod
    def load(cls, path: str = KALLSYMS) -> "SymbolNames":
        with open(path, "rb") as f:
            return cls(f.read())

    def lookup(self, name: str) -> str | None:
        """The symbol to attach to for name: name itself, else a compiler clone (name.constprop.0 ...)."""
        key = name.encode()
        for tag in (b" T ", b" t ", b" W ", b" w "):
            for end in (b"\n", b"\t"):
                if self.data.find(tag + key + end) >= 0:
                    return name
        for tag in (b" T ", b" t "):
            i = self.data.find(tag + key + b".")
            if i >= 0:
                start = i + len(tag)
                stop = min(j for j in (self.data.find(b"\n", start), self.data.find(b"\t", start), len(self.data))
                           if j >= 0)
                return self.data[start:stop].decode()
        return None
