"""Name look-ups over the types of one parsed BTF blob, without a dict of every name.

The kernel's BTF has ~126,000 types and a 2.3 MB string table, and NetBee asks for a few
dozen names per start.  A Python dict of every name costs ~100 ms to build; instead this
keeps the types' name offsets sorted (C-level steps, ~23 ms on vmlinux, built on the
first look-up) and finds a name's offsets by searching the string table (C speed, ~0.5 ms).
Each answer is memoized, so asking again is a dict hit.  Searching for `name\\0` anywhere
in the table, not only at string starts, keeps look-ups exact for name offsets that point
into the middle of a longer string (our encoder shares suffixes, "bar" inside "foobar").

Everything here describes the data as parsed: types replaced or added later through
Btf.replace/add_type are handled by btf.py on top of these answers.
"""
from __future__ import annotations

from array import array
from bisect import bisect_left
from itertools import compress, repeat
from operator import lshift, or_
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple


_ID_BITS = 24                 # btf.py refuses more than 2**24 types
_ID_MASK = (1 << _ID_BITS) - 1


class NameIndex:
    """Raw type ids by name offset for one parsed type section (immutable, shareable)."""

    __slots__ = ("strings", "str_base", "words", "offsets", "first_id", "_packed", "_memo",
                 "_known", "__weakref__")

    def __init__(self, strings: bytes, str_base: int, words: "array[int]", offsets: Sequence[int],
                 first_id: int) -> None:
        self.strings = strings
        self.str_base = str_base
        self.words = words
        self.offsets = offsets
        self.first_id = first_id
        # name_off << 24 | local type number of every named type, ascending
        self._packed: Optional["array[int]"] = None
        self._memo: Dict[bytes, Tuple[int, ...]] = {}
        self._known: Dict[bytes, Tuple[int, ...]] = {}   # positions() answered elsewhere (know_positions)

    def _sorted(self) -> "array[int]":
        """name_off << 24 | local type number of every named type, ascending (kept packed: a
        look-up bisects on name_off << 24, and unpacking into two arrays cost ~6 ms)."""
        if self._packed is None:
            # Every step is a C loop. Only named types (~56 % of vmlinux) are sorted, each as
            # one int (BTF has < 2**24 types): one list of Python ints at the peak instead of
            # two lists of all types (start-up peak memory -5 MB). Ties sort by number, so ids
            # ascend per name; pahole writes names in nearly ascending order, so the sort
            # itself is ~1 ms.
            col = array("I", map(self.words.__getitem__, self.offsets))
            self._packed = array("Q", sorted(map(or_, map(lshift, compress(col, col), repeat(_ID_BITS)),
                                                 compress(range(len(col)), col))))
        return self._packed

    def positions(self, pattern: bytes) -> List[int]:
        """Absolute string offsets at which this table holds `pattern`."""
        known = self._known.get(pattern)
        if known is not None:
            return list(known)
        return string_positions(self.strings, self.str_base, pattern)

    def know_positions(self, found: Mapping[bytes, Sequence[int]]) -> None:
        """positions() answers found by another process in the same string table (a child that
        read the same unchanged file: netbee/loader/background_parse.py), taken as they are."""
        for pattern, offsets in found.items():
            self._known[bytes(pattern)] = tuple(offsets)

    def ids_named_at(self, name_offs: Iterable[int]) -> List[int]:
        """Raw type ids whose name_off is one of `name_offs`, ascending."""
        packed = self._sorted()
        first = self.first_id
        out: List[int] = []
        for off in name_offs:
            lo = bisect_left(packed, off << _ID_BITS)
            hi = bisect_left(packed, (off + 1) << _ID_BITS, lo)
            out.extend(first + (p & _ID_MASK) for p in packed[lo:hi])
        out.sort()
        return out

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
