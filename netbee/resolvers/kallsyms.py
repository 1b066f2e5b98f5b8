"""/proc/kallsyms, both ways: addresses -> "sym+0xoff [module]" (Kallsyms, for call stacks) and
"does this function exist, under which clone name" (SymbolNames, for choosing attach targets).

The file is not guaranteed to be sorted (module symbols follow the core kernel in load order), so
we sort by address ourselves and binary-search. Loaded lazily: only --stack needs it.
"""
from __future__ import annotations

import bisect
from array import array
from typing import IO, Optional

TEXT_TYPES = frozenset("tT")
# Beyond this distance from the nearest symbol an address is not attributed to it.
MAX_OFFSET = 1 << 20
KALLSYMS = "/proc/kallsyms"


def parse(f: IO[str]) -> "SymbolTable":
    """Text symbols (t/T) of a kallsyms file, sorted by address."""
    table = SymbolTable()
    add = table.add
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
        add(addr, (parts[2] if len(parts) < 4 else f"{parts[2]} {parts[3]}").encode())
    return table.sorted()


class SymbolTable:
    """Distinct addresses and one label each, packed: an array of addresses, an array of label
    offsets and one bytearray. A kernel has ~120,000 text symbols; as Python ints and str objects
    they held ~25 MiB, packed ~4.5 MiB (and no more than that while parsing, as /proc/kallsyms
    comes sorted).

    Several symbols can share an address; resolve() must name one of them consistently, so each
    address keeps the greatest label (what sorting (address, label) pairs and taking the last of
    a run gives)."""

    __slots__ = ("addrs", "offsets", "blob", "count", "in_order")

    def __init__(self) -> None:
        self.addrs: "array[int]" = array("Q")
        self.offsets: "array[int]" = array("I", [0])   # label i is blob[offsets[i]:offsets[i + 1]]
        self.blob = bytearray()
        self.count = 0          # symbols added, duplicates included
        self.in_order = True    # addresses added in nondecreasing order so far

    def add(self, addr: int, label: bytes) -> None:
        self.count += 1
        addrs = self.addrs
        if addrs and addr <= addrs[-1]:
            if addr < addrs[-1]:
                self.in_order = False
            elif label > self.label_bytes(len(addrs) - 1):
                del self.blob[self.offsets[-2]:]   # same address, greater label: it replaces the last
                self.blob += label
                self.offsets[-1] = len(self.blob)
                return
            else:
                return
        addrs.append(addr)
        self.blob += label
        self.offsets.append(len(self.blob))

    def sorted(self) -> "SymbolTable":
        """self if the addresses came in order, else a sorted copy (ties still keep the greatest label)."""
        if self.in_order:
            return self
        out = SymbolTable()
        for i in sorted(range(len(self.addrs)), key=self.addrs.__getitem__):
            out.add(self.addrs[i], self.label_bytes(i))
        out.count = self.count
        return out

    def __len__(self) -> int:
        return self.count

    def label_bytes(self, i: int) -> bytes:
        return bytes(self.blob[self.offsets[i]:self.offsets[i + 1]])

    def label(self, i: int) -> str:
        return self.blob[self.offsets[i]:self.offsets[i + 1]].decode()


class Kallsyms:
    """resolve(addr) -> "ip_rcv+0x1c" or "nft_do_chain+0x3a [nf_tables]"; unknown -> "0x..."."""

    def __init__(self, path: str = KALLSYMS, f: Optional[IO[str]] = None) -> None:
        self.path = path
        self._file = f
        self._table: Optional[SymbolTable] = None

    def _load(self) -> SymbolTable:
        if self._file is not None:
            self._table = parse(self._file)
        else:
            try:
                with open(self.path, encoding="ascii", errors="replace") as f:
                    self._table = parse(f)
            except OSError:
                self._table = SymbolTable()
        return self._table

    def __len__(self) -> int:
        return len(self._table or self._load())

    def resolve(self, addr: int) -> str:
        table = self._table or self._load()
        addrs = table.addrs
        i = bisect.bisect_right(addrs, addr) - 1
        if i < 0 or addr - addrs[i] > MAX_OFFSET:
            return f"0x{addr:x}"
        name, _, mod = table.label(i).partition(" ")
        return f"{name}+0x{addr - addrs[i]:x}" + (f" {mod}" if mod else "")


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
