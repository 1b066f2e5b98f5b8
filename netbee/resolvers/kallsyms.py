"""/proc/kallsyms, both ways: addresses -> "sym+0xoff [module]" (Kallsyms, for call stacks) and
"does this function exist, under which clone name" (SymbolNames, for choosing attach targets).

The file is not guaranteed to be sorted (module symbols follow the core kernel in load order), so
we sort by address ourselves and binary-search. Loaded lazily: only --stack needs it.
"""
from __future__ import annotations

import bisect
import heapq
import io
import zlib
from array import array
from typing import IO, Dict, Iterable, Iterator, List, Optional, Tuple

TEXT_TYPES = frozenset((b"t", b"T"))
# Beyond this distance from the nearest symbol an address is not attributed to it.
MAX_OFFSET = 1 << 20
KALLSYMS = "/proc/kallsyms"


def parse(f: IO) -> "SymbolTable":
    """Text symbols (t/T) of a kallsyms file (binary, or text as in tests), sorted by address."""
    lines: Iterable[bytes] = f
    if isinstance(getattr(f, "encoding", None), str) or isinstance(f, io.StringIO):
        lines = (line.encode() for line in f)
    table = SymbolTable()
    table.add_lines(lines)
    return table.finish()


class SymbolTable:
    """Distinct addresses, sorted, and one label each: an array of addresses and the labels in
    zlib-compressed blocks of BLOCK ("\\n"-separated). A kernel has ~120,000 text symbols; as Python
    ints and strs they held ~25 MiB, so a drop flood rendered as a table (each drop names its
    location) grew the process by that much; packed, ~1.7 MiB, built block by block as
    /proc/kallsyms comes sorted.

    Several symbols can share an address; resolve() must name one of them consistently, so each
    address keeps the greatest label (what sorting (address, label) pairs and taking the last of
    a run gives)."""

    BLOCK = 64

    def __init__(self) -> None:
        self.addrs: "array[int]" = array("Q")
        self.blocks: List[bytes] = []
        self.count = 0                      # symbols added, duplicates included
        self._open: List[bytes] = []        # labels of the block being filled
        self._stray: List[Tuple[int, bytes]] = []   # symbols that came out of address order
        self._unpacked: Tuple[int, List[bytes]] = (-1, [])

    def add_lines(self, lines: Iterable[bytes]) -> None:
        """kallsyms lines; the loop runs 120,000 times while the first drop waits, so add() is
        inlined for the usual case (the next address in order)."""
        addrs = self.addrs
        append_addr = addrs.append
        block = self._open
        close, size = self._close_block, self.BLOCK
        last = addrs[-1] if addrs else -1
        count = 0
        for line in lines:
            parts = line.split()
            if len(parts) < 3 or parts[1] not in TEXT_TYPES:
                continue
            try:
                addr = int(parts[0], 16)
            except ValueError:
                continue
            if addr == 0:  # kptr_restrict hides addresses: nothing to resolve with
                continue
            label = parts[2] if len(parts) < 4 else parts[2] + b" " + parts[3]
            if addr > last:
                if len(block) == size:
                    close()
                    block = self._open
                append_addr(addr)
                block.append(label)
                last = addr
                count += 1
            else:
                self.add(addr, label)
        self.count += count

    def add(self, addr: int, label: bytes) -> None:
        self.count += 1
        addrs = self.addrs
        if addrs and addr <= addrs[-1]:
            if addr < addrs[-1]:
                self._stray.append((addr, label))
            elif label > self._open[-1]:
                self._open[-1] = label   # same address, greater label: it replaces the kept one
            return
        if len(self._open) == self.BLOCK:
            self._close_block()
        addrs.append(addr)
        self._open.append(label)

    def _close_block(self) -> None:
        self.blocks.append(zlib.compress(b"\n".join(self._open)))
        self._open = []

    def finish(self) -> "SymbolTable":
        """Sorted and packed. Symbols that came out of order (a few, in /proc/kallsyms) are merged
        in one streaming pass, so the table is never held unpacked."""
        if self._stray:
            if self._open:
                self._close_block()
            merged = heapq.merge(self._pairs(), sorted(self._stray))
            count = self.count
            self.__init__()   # type: ignore[misc]
            for addr, label in merged:   # reads the old blocks while the new ones are written
                self.add(addr, label)
            self.count = count
        if self._open:
            self._close_block()
        return self

    def _pairs(self) -> Iterator[Tuple[int, bytes]]:
        """(address, label) in order, over the blocks as they are now (not after a reset)."""
        return self._unpack_blocks(self.addrs, self.blocks, self.BLOCK)

    @staticmethod
    def _unpack_blocks(addrs: "array[int]", blocks: List[bytes], size: int) -> Iterator[Tuple[int, bytes]]:
        for b, block in enumerate(blocks):
            yield from zip(addrs[b * size:(b + 1) * size], zlib.decompress(block).split(b"\n"))

    def __len__(self) -> int:
        return self.count

    def label(self, i: int) -> str:
        block = i // self.BLOCK
        if self._unpacked[0] != block:
            self._unpacked = (block, zlib.decompress(self.blocks[block]).split(b"\n"))
        return self._unpacked[1][i % self.BLOCK].decode("utf-8", "replace")


class Kallsyms:
    """resolve(addr) -> "ip_rcv+0x1c" or "nft_do_chain+0x3a [nf_tables]"; unknown -> "0x..."."""

    CACHE_MAX = 4096

    def __init__(self, path: str = KALLSYMS, f: Optional[IO[str]] = None) -> None:
        self.path = path
        self._file = f
        self._table: Optional[SymbolTable] = None
        self._resolved: Dict[int, str] = {}   # drop locations and stacks repeat a few addresses

    def _load(self) -> SymbolTable:
        if self._file is not None:
            self._table = parse(self._file)
        else:
            try:
                with open(self.path, "rb") as f:
                    self._table = parse(f)
            except OSError:
                self._table = SymbolTable().finish()
        return self._table

    def __len__(self) -> int:
        return len(self._table or self._load())

    def resolve(self, addr: int) -> str:
        text = self._resolved.get(addr)
        if text is None:
            text = self._resolve(addr)
            if len(self._resolved) >= self.CACHE_MAX:
                self._resolved.clear()
            self._resolved[addr] = text
        return text

    def _resolve(self, addr: int) -> str:
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
