"""Name look-ups over the types of one parsed BTF blob, without a dict of every name.

The kernel's BTF has ~126,000 types and a 2.3 MB string table, and a start asks for a few
dozen names.  A Python dict of every name costs ~100 ms to build.  Instead a name's string
offsets are found by searching the string table (C speed, ~0.5 ms), then the types carrying
them in a column of every type's name offset (built in ~6 ms): one offset by bytes.find over
the column as 4 big-endian bytes per type (~0.4 ms), several ("net\\0" ends ~170 strings) by one
pass testing each entry against their set (~4 ms).  Big-endian because bytes.find checks a
pattern's last byte first: the low byte of an offset is nearly random, where the high byte of
every little-endian entry is zero (the search would stop at every entry).  Past the cost of a
sort (a caller asking for hundreds of names, or ranges of offsets) the name offsets are sorted
once instead (~25 ms) and bisected.  Each answer is memoized, so asking again is a dict hit.
Searching for `name\\0` anywhere in the table, not only at string starts, keeps look-ups
exact for name offsets that point into the middle of a longer string (our encoder shares
suffixes, "bar" inside "foobar"). The running kernel's own BTF is written by pahole through
libbpf, which stores each string once, whole, and names only string starts: there a name is
found by its first occurrence as a whole string, `\\0name\\0` (unique_strings), and most names
are in the table's first sixth (~0.05 ms instead of a ~1 ms search of all of it).
tests/kernel/test_kernel_btf_strings.py checks the premise on every kernel the tests run on.

Everything here describes the data as parsed: types replaced or added later through
Btf.replace/add_type are handled by btf.py on top of these answers.
"""
from __future__ import annotations

import sys
from array import array
from bisect import bisect_left
from itertools import compress, repeat
from operator import lshift, or_
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple


_ID_BITS = 24                 # btf.py refuses more than 2**24 types
_ID_MASK = (1 << _ID_BITS) - 1
# Column work before the name offsets are sorted instead (~25 ms on vmlinux), counted in
# single-offset searches (~0.4 ms each); a pass over the column for a set of offsets (~4 ms)
# costs PASS_COST of them. A start spends ~25: two passes (the plan's names, CO-RE's, each
# announced by prefetch) and a few single look-ups. A caller asking name after name wastes at
# most the budget (~13 ms) before the sort.
COLUMN_BUDGET = 32
PASS_COST = 10


class NameIndex:
    """Raw type ids by name offset for one parsed type section (immutable, shareable)."""

    __slots__ = ("strings", "str_base", "words", "offsets", "first_id", "unique_strings", "_packed",
                 "_names", "_column", "_by_off", "_pending", "_spent", "_memo", "_known", "__weakref__")

    def __init__(self, strings: bytes, str_base: int, words: "array[int]", offsets: Sequence[int],
                 first_id: int, unique_strings: bool = False, names: Optional["array[int]"] = None) -> None:
        """unique_strings: every string of the table is stored once, whole, and every type's
        name offset is the start of a string (BTF written by libbpf, as the kernel's is).
        names: each type's name offset, if the caller has them (Btf's walk takes them)."""
        self.unique_strings = unique_strings
        self.strings = strings
        self.str_base = str_base
        self.words = words
        self.offsets = offsets
        self.first_id = first_id
        # name_off << 24 | local type number of every named type, ascending
        self._packed: Optional["array[int]"] = None
        self._names: Optional["array[int]"] = names   # name_off of every type
        self._column: Optional[bytes] = None         # the same, 4 big-endian bytes each
        self._by_off: Dict[int, Tuple[int, ...]] = {}   # name_off: local numbers, from the column
        self._pending: Set[int] = set()                 # name_offs for the next pass (know_positions)
        self._spent = 0                                 # column work done (COLUMN_BUDGET)
        self._memo: Dict[bytes, Tuple[int, ...]] = {}
        self._known: Dict[bytes, Tuple[int, ...]] = {}   # positions(), searched here or elsewhere

    def _sorted(self) -> "array[int]":
        """name_off << 24 | local type number of every named type, ascending (kept packed: a
        look-up bisects on name_off << 24, and unpacking into two arrays cost ~6 ms)."""
        if self._packed is None:
            # Every step is a C loop. Only named types (~56 % of vmlinux) are sorted, each as
            # one int (BTF has < 2**24 types): one list of Python ints at the peak instead of
            # two lists of all types (start-up peak memory -5 MB). Ties sort by number, so ids
            # ascend per name; pahole writes names in nearly ascending order, so the sort
            # itself is ~1 ms.
            col = self._name_column()
            self._packed = array("Q", sorted(map(or_, map(lshift, compress(col, col), repeat(_ID_BITS)),
                                                 compress(range(len(col)), col))))
        return self._packed

    def positions(self, pattern: bytes) -> List[int]:
        """Absolute string offsets at which this table holds `pattern` (memoized)."""
        known = self._known.get(pattern)
        if known is None:
            known = self._known[pattern] = tuple(string_positions_many(
                self.strings, self.str_base, [pattern], self.unique_strings)[pattern])
        return list(known)

    def positions_many(self, patterns: Iterable[bytes]) -> Dict[bytes, List[int]]:
        """positions() of each pattern, the unknown ones searched together (string_positions_many)."""
        patterns = list(patterns)
        new = [p for p in patterns if p not in self._known]
        if new:
            for p, found in string_positions_many(self.strings, self.str_base, new, self.unique_strings).items():
                self._known[p] = tuple(found)
        return {p: list(self._known[p]) for p in patterns}

    def know_positions(self, found: Mapping[bytes, Sequence[int]], find_types: bool = True) -> None:
        """positions() answers found by another process in the same string table (a child that
        read the same unchanged file: netbee/loader/background_parse.py), taken as they are;
        the types named at them are then found in one pass, now or (find_types=False) in the
        next one, with the names a prefetch() will announce."""
        for pattern, offsets in found.items():
            self._known[bytes(pattern)] = tuple(offsets)
        offs = {off for offsets in found.values() for off in offsets}
        if find_types:
            self.prefetch(offs)
        else:
            self._pending |= offs

    def ids_named_at(self, name_offs: Iterable[int]) -> List[int]:
        """Raw type ids whose name_off is one of `name_offs`, ascending."""
        offs = set(name_offs)
        offs.discard(0)   # the unnamed types, never asked for
        first = self.first_id
        if self._packed is None:
            missing = offs.difference(self._by_off)
            if missing:
                cost = PASS_COST if len(missing) >= PASS_COST else len(missing)
                if self._spent + cost <= COLUMN_BUDGET:
                    if cost == PASS_COST:
                        self._pass(missing)
                    else:
                        self._spent += cost
                        for off in missing:
                            self._by_off[off] = self._column_matches(off)
                    missing = set()
            if not missing:
                by_off = self._by_off
                return sorted(first + n for off in offs for n in by_off[off])
        packed = self._sorted()
        out: List[int] = []
        for off in offs:
            lo = bisect_left(packed, off << _ID_BITS)
            hi = bisect_left(packed, (off + 1) << _ID_BITS, lo)
            out.extend(first + (p & _ID_MASK) for p in packed[lo:hi])
        out.sort()
        return out

    def prefetch(self, name_offs: Iterable[int]) -> None:
        """Find the types of many name offsets in one pass over the column, for look-ups to
        come (each would otherwise search the column, or the index be sorted)."""
        if self._packed is None:
            missing = set(name_offs).union(self._pending).difference(self._by_off)
            missing.discard(0)
            if len(missing) > 1 and self._spent + PASS_COST <= COLUMN_BUDGET:
                self._pass(missing)

    def _pass(self, offs: Set[int]) -> None:
        offs = offs.union(self._pending).difference(self._by_off)
        self._pending.clear()
        names = self._name_column()
        found: Dict[int, List[int]] = {off: [] for off in offs}
        for n in compress(range(len(names)), map(offs.__contains__, names)):
            found[names[n]].append(n)
        self._by_off.update((off, tuple(ns)) for off, ns in found.items())
        self._spent += PASS_COST

    def _name_column(self) -> "array[int]":
        if self._names is None:
            self._names = array("I", map(self.words.__getitem__, self.offsets))
        return self._names

    def _column_matches(self, off: int) -> Tuple[int, ...]:
        """Local numbers of the types whose name_off is `off`, by bytes.find over the column."""
        col = self._column
        if col is None:
            c = array("I", self._name_column())
            if sys.byteorder == "little":
                c.byteswap()
            col = self._column = c.tobytes()
        pattern = off.to_bytes(4, "big")
        out: List[int] = []
        pos = col.find(pattern)
        while pos >= 0:
            if pos & 3:   # straddles two entries
                pos = col.find(pattern, pos + 1)
            else:
                out.append(pos >> 2)
                pos = col.find(pattern, pos + 4)
        return tuple(out)

    def ids_named_between(self, lo_off: int, hi_off: int) -> List[int]:
        """Raw type ids whose name_off lies in [lo_off, hi_off]."""
        packed = self._sorted()
        lo = bisect_left(packed, lo_off << _ID_BITS)
        hi = bisect_left(packed, (hi_off + 1) << _ID_BITS, lo)
        return [self.first_id + (p & _ID_MASK) for p in packed[lo:hi]]

    def memo(self, key: bytes) -> Optional[Tuple[int, ...]]:
        return self._memo.get(key)

    def remember(self, key: bytes, ids: Sequence[int]) -> Tuple[int, ...]:
        t = self._memo[key] = tuple(ids)
        return t


def string_positions(strings: bytes, str_base: int, pattern: bytes) -> List[int]:
    """Absolute offsets (the table starting at str_base) at which `strings` holds `pattern`."""
    out: List[int] = []
    pos = strings.find(pattern)
    while pos >= 0:
        out.append(str_base + pos)
        pos = strings.find(pattern, pos + 1)
    return out


FLAVOR = b"___"   # CO-RE's flavor separator: sk_buff___old is a flavor of sk_buff


def whole_string_position(strings: bytes, str_base: int, name: bytes) -> List[int]:
    """[offset] of the string `name` (given with its NUL) in a table that stores each string
    once, whole; [] if absent. The empty string is at the table's start."""
    if name == b"\0":
        return [str_base] if strings[:1] == b"\0" else []
    if strings.startswith(name):
        return [str_base]
    pos = strings.find(b"\0" + name)
    return [str_base + pos + 1] if pos >= 0 else []


def string_positions_many(strings: bytes, str_base: int, patterns: Iterable[bytes],
                          unique_strings: bool = False) -> Dict[bytes, List[int]]:
    """string_positions of each pattern. The patterns ending in "___" (CO-RE's flavor
    prefixes, one per relocated type) are found from one search for "___" (~70 in vmlinux's
    strings): each search of the 2.3 MB table costs ~1 ms whatever it looks for. With
    unique_strings (NameIndex) a whole name (`name\\0`) is only looked for as a whole string,
    and found where it first is."""
    out: Dict[bytes, List[int]] = {}
    flavored = []
    for p in dict.fromkeys(patterns):
        if p.endswith(FLAVOR) and len(p) > len(FLAVOR):
            flavored.append(p)
        elif unique_strings and p.endswith(b"\0") and p.find(b"\0") == len(p) - 1:
            out[p] = whole_string_position(strings, str_base, p)
        else:
            out[p] = string_positions(strings, str_base, p)
    if flavored:
        seps = string_positions(strings, 0, FLAVOR)   # overlapping: "____" holds two
        for p in flavored:
            head = len(p) - len(FLAVOR)
            out[p] = [str_base + t - head for t in seps
                      if t >= head and strings.startswith(p, t - head)]
    return out
