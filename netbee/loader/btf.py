"""BTF: parse, query, edit, encode and sanitize BPF Type Format data.

Pure Python, no kernel. Parsing is lazy because the kernel's vmlinux BTF holds
over 100,000 types: construction only walks the type headers to record where
each type starts; a type is decoded when asked for, and look-ups by name go
through btf_index.NameIndex (sorted name offsets + string table search, built on
the first look-up). Btf.load_kernel shares one parse (and its index) between the
callers of one process that load the same unchanged file.
"""
from __future__ import annotations

import os
import sys
import weakref
from array import array
from collections.abc import Sequence
from typing import BinaryIO, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from netbee.loader.btf_types import (INT_BOOL, INT_CHAR, INT_SIGNED, MODIFIERS, Array, BtfKind,  # noqa: F401
                                     BtfType, Const, Datasec, DeclTag, Enum, Enum64, EnumValue,
                                     Float, Func, FuncProto, Fwd, Int, Member, Param, Ptr, Restrict,
                                     Struct, Typedef, TypeTag, Union, Var, VarSecInfo, Void,
                                     Volatile)
from netbee.loader.btf_encode import StringTable, encode_type
from netbee.loader.btf_index import NameIndex, string_positions_many
from netbee.loader.errors import BTFError
from netbee.loader.kernel_btf_file import KERNEL_BTF_PATH, map_kernel_btf  # noqa: F401 (re-exported)

BTF_MAGIC = 0xEB9F
HEADER_SIZE = 24

# load_kernel: (path, dev, inode, size, mtime) -> the parsed raw types, while some Btf uses them.
# features.py and the tracer each load the kernel BTF; the second load costs a stat.
_PARSED: "weakref.WeakValueDictionary[tuple, NameIndex]" = weakref.WeakValueDictionary()
# Files load_kernel parsed without error: (path, dev, inode, size, mtime).
_PARSED_OK: set = set()
# enum_values of kernel BTF: (path, dev, inode, size, mtime, enum name) -> values; a few small dicts.
_ENUMS: Dict[tuple, Dict[str, int]] = {}
# What a deferred load_kernel (Btf._deferred) reads on first use.
_DEFERRED = ("_strings", "_words", "_offsets", "_index")

# Guards recursion through typedef/array chains of corrupt or cyclic BTF.
_MAX_CHAIN = 64
# The kernel's BTF_MAX_TYPE is 0xfffff; allow headroom, refuse what can only be corrupt.
_MAX_TYPES = 1 << 24


# Words (u32) after the 3-word common header: a fixed part and a part per vlen entry.
_FIXED_WORDS = [None] * 32
_VLEN_WORDS = [0] * 32
for _k in BtfKind:
    _FIXED_WORDS[_k] = 3
_FIXED_WORDS[BtfKind.UNKN] = None
_FIXED_WORDS[BtfKind.INT] = 4
_FIXED_WORDS[BtfKind.ARRAY] = 6
_FIXED_WORDS[BtfKind.VAR] = 4
_FIXED_WORDS[BtfKind.DECL_TAG] = 4
for _k, _n in ((BtfKind.STRUCT, 3), (BtfKind.UNION, 3), (BtfKind.ENUM, 2), (BtfKind.FUNC_PROTO, 2),
               (BtfKind.DATASEC, 3), (BtfKind.ENUM64, 3)):
    _VLEN_WORDS[_k] = _n


def _s32(v: int) -> int:
    return v - (1 << 32) if v & 0x80000000 else v


class _Types(Sequence):
    """`btf.types`: a read-only, lazily decoded list indexed by type id."""

    def __init__(self, btf: "Btf") -> None:
        self._btf = btf

    def __len__(self) -> int:
        return len(self._btf)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self._btf.type(j) for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        return self._btf.type(i)


class Btf:
    """A set of BTF types. `Btf()` is empty (only void) and can be built with add_type."""

    def __init__(self, base: Optional["Btf"] = None) -> None:
        self.base = base
        self._first_id = len(base) if base is not None else 1
        self._str_base = base._str_end if base is not None else 0
        self._words = array("I")          # raw type section as native u32 words
        self._offsets: "array[int]" = array("I")   # word index of each raw type
        # name_off of each raw type, made by the walk (_scan) for the name index to take
        self._scanned_names: "Optional[array[int]]" = None
        self._strings = b"\0" if base is None else b""
        self._cache: Dict[int, BtfType] = {}
        self._replaced: Dict[int, BtfType] = {}
        self._added: List[BtfType] = []
        self._index: Optional[NameIndex] = None
        self._file_key: Optional[tuple] = None   # load_kernel: which unchanged file this is

    def __getattr__(self, name: str):
        # Called only for attributes that are not set: the raw data of a deferred load_kernel
        # (see _deferred), parsed on first real use.
        path = self.__dict__.get("_deferred_path")
        if name not in _DEFERRED or path is None:
            raise AttributeError(name)
        full = type(self)._load_kernel(path, defer=False)
        del self.__dict__["_deferred_path"]
        self._strings, self._words, self._offsets = full._strings, full._words, full._offsets
        self._index, self._file_key = full._idx(), full._file_key
        return self.__dict__[name]

    @property
    def types(self) -> _Types:
        """The types by id, decoded on access. A property, not an attribute: a Btf must not
        reference itself, so dropping the last reference frees its megabytes at once (no
        wait for the cycle collector)."""
        return _Types(self)

    # ------------------------------------------------------------------ parsing
    @classmethod
    def parse(cls, data: bytes, base: Optional["Btf"] = None) -> "Btf":
        """Parse raw BTF (the .BTF section or /sys/kernel/btf/* contents); the types and the
        strings are copied out of `data` (any bytes-like object), which is not kept."""
        if len(data) < HEADER_SIZE:
            raise BTFError(f"BTF too short: {len(data)} bytes, header needs {HEADER_SIZE}")
        swap, hdr_len, type_off, type_len, str_off, str_len = _header(data)
        if hdr_len > len(data):
            raise BTFError(f"bad BTF header length {hdr_len}")
        body = len(data) - hdr_len
        if type_off + type_len > body or str_off + str_len > body:
            raise BTFError(f"BTF sections exceed the data ({len(data)} bytes): truncated?")
        with memoryview(data) as view:
            words = array("I")
            words.frombytes(view[hdr_len + type_off:hdr_len + type_off + type_len])   # one copy, not two
            strings = bytes(view[hdr_len + str_off:hdr_len + str_off + str_len])
        return cls._from_sections(strings, words, swap, base)

    @classmethod
    def _read(cls, head: bytes, f: BinaryIO) -> "Btf":
        """Parse raw BTF from a file positioned after its first HEADER_SIZE bytes (`head`),
        reading the type section straight into its array: the kernel's 5.5 MB are never held
        twice (start-up peak memory)."""
        if len(head) < HEADER_SIZE:
            raise BTFError(f"BTF too short: {len(head)} bytes, header needs {HEADER_SIZE}")
        swap, hdr_len, type_off, type_len, str_off, str_len = _header(head)
        if type_off + type_len > str_off:   # not the usual types-then-strings layout
            return cls.parse(head + f.read())
        pos = HEADER_SIZE

        def skip_to(where: int) -> None:
            nonlocal pos
            if where > pos and len(f.read(where - pos)) != where - pos:
                raise BTFError("BTF sections exceed the data: truncated?")
            pos = where

        skip_to(hdr_len + type_off)
        words = array("I", [0]) * (type_len // 4)
        if f.readinto(memoryview(words).cast("B")) != type_len:
            raise BTFError("BTF sections exceed the data: truncated?")
        pos += type_len
        skip_to(hdr_len + str_off)
        strings = f.read(str_len)
        if len(strings) != str_len:
            raise BTFError("BTF sections exceed the data: truncated?")
        return cls._from_sections(strings, words, swap, None)

    @classmethod
    def _from_sections(cls, strings: bytes, words: "array[int]", swap: bool, base: Optional["Btf"]) -> "Btf":
        btf = cls(base)
        if base is None and (not strings or strings[0] != 0):
            raise BTFError("BTF string section must start with an empty string")
        if strings and strings[-1] != 0:
            raise BTFError("BTF string section is not NUL-terminated")
        btf._strings = strings
        if swap:
            words.byteswap()
        btf._words = words
        btf._offsets = btf._scan(words)
        return btf

    def _scan(self, w: "array[int]") -> "array[int]":
        """Record the start of every type; validates kinds and lengths. A type's length depends
        on its info word only, and vmlinux's 126,000 types have a few thousand distinct ones:
        one dict look-up per type instead of the arithmetic, and the walk's end found by the
        IndexError of reading past the last word rather than by a comparison per type
        (34 -> 19 -> 13 ms). Each type's name offset is taken on the way (the name index's
        column: ~2 ms more here, ~8 ms less than a second pass over the offsets)."""
        offsets: "array[int]" = array("I")
        names: "array[int]" = array("I")
        append = offsets.append
        name = names.append
        steps: Dict[int, int] = {}
        i = 0
        if w:
            try:
                while True:
                    append(i)
                    name(w[i])
                    try:
                        i += steps[w[i + 1]]
                    except KeyError:
                        info = w[i + 1]
                        kind = (info >> 24) & 0x1F
                        fixed = _FIXED_WORDS[kind]
                        if fixed is None:
                            raise BTFError(f"BTF type {self._first_id + len(offsets) - 1} has unknown kind {kind}")
                        i += steps.setdefault(info, fixed + _VLEN_WORDS[kind] * (info & 0xFFFF))
            except IndexError:
                # w[i + 1] does not exist: i is the end of the last type, or a type is cut short
                end = offsets.pop()
                if len(names) > len(offsets):
                    names.pop()
                n = len(w)
                if end < n:
                    raise BTFError(f"BTF type {self._first_id + len(offsets)} is truncated") from None
                if end > n:
                    which = self._first_id + len(offsets) - 1
                    if offsets[-1] + 3 > n:
                        raise BTFError(f"BTF type {which} is truncated") from None
                    raise BTFError(f"BTF type {which} runs past the type section") from None
        if self._first_id + len(offsets) > _MAX_TYPES:
            raise BTFError("too many BTF types")
        self._scanned_names = names
        return offsets

    @classmethod
    def search_kernel_strings(cls, path: str, patterns: Iterable[bytes]) -> Optional[Tuple[tuple, Dict[bytes, List[int]]]]:
        """(file key as load_kernel makes it, positions of each pattern in the file's string
        table), reading the header and the strings only: for a process that searches ahead of
        the one that parses the types (use_known_positions). None for an ELF file or a BTF
        whose strings do not follow its types."""
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                key = (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                head = f.read(HEADER_SIZE)
                if len(head) < HEADER_SIZE or head[:4] == b"\x7fELF":
                    return None
                _swap, hdr_len, type_off, type_len, str_off, str_len = _header(head)
                if type_off + type_len > str_off:
                    return None
                f.seek(hdr_len + str_off)
                strings = f.read(str_len)
        except (OSError, BTFError):
            return None
        if len(strings) != str_len:
            return None
        return key, string_positions_many(strings, 0, patterns, unique_strings=path == KERNEL_BTF_PATH)

    @classmethod
    def kernel_enum_values(cls, enum_name: str, path: Optional[str] = None) -> Dict[str, int]:
        """enum_values() of the kernel BTF (or `path`), remembered per unchanged file: a trace
        needs a few enums (drop reasons) long after the tracer let go of the whole BTF."""
        return cls.load_kernel(path).enum_values(enum_name)

    @classmethod
    def load_kernel(cls, path: Optional[str] = None) -> "Btf":
        """The running kernel's BTF, or that of a file: raw BTF or an ELF (vmlinux) with .BTF.

        A file this process already parsed without error, and whose parse is no longer held by
        anyone, is parsed again only when first needed: enum_values() of an enum read before
        (the drop reasons, during a trace) is answered from a small memo without it."""
        return cls._load_kernel(path or KERNEL_BTF_PATH, defer=True)

    @classmethod
    def _load_kernel(cls, path: str, defer: bool) -> "Btf":
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                key = (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                raw = _PARSED.get(key)
                if raw is not None:
                    btf = cls._from_index(raw)
                    btf._file_key = key
                    return btf
                if defer and key in _PARSED_OK:
                    return cls._deferred(path, key)
                mapped = map_kernel_btf(f, path)
                if mapped is not None:
                    with mapped:
                        btf = cls.parse(mapped)
                else:
                    head = f.read(HEADER_SIZE)
                    if head[:4] == b"\x7fELF":
                        data = btf_section_from_elf(head + f.read(), path)
                        btf = cls.parse(data)
                    else:
                        btf = cls._read(head, f)
        except OSError as e:
            raise BTFError(f"cannot read kernel BTF from {path}: {e.strerror or e}") from e
        except BTFError as e:
            raise BTFError(f"{path}: {e}") from e
        if path == KERNEL_BTF_PATH:
            # the running kernel's own, written by pahole through libbpf: each string once (btf_index)
            btf._index = btf._new_index(unique_strings=True)
        _PARSED[key] = btf._idx()
        _PARSED_OK.add(key)
        btf._file_key = key
        return btf

    @classmethod
    def _deferred(cls, path: str, key: tuple) -> "Btf":
        """A kernel Btf whose raw data is read on first use (__getattr__)."""
        btf = cls()
        for name in _DEFERRED:
            delattr(btf, name)
        btf._deferred_path = path
        btf._file_key = key
        return btf

    @classmethod
    def _from_index(cls, raw: NameIndex) -> "Btf":
        """A fresh Btf over already parsed raw types: edits (replace/add_type) stay its own."""
        btf = cls()
        btf._strings, btf._words, btf._offsets = raw.strings, raw.words, raw.offsets
        btf._index = raw
        return btf

    def _idx(self) -> NameIndex:
        if self._index is None:
            self._index = self._new_index()
        return self._index

    def _new_index(self, unique_strings: bool = False) -> NameIndex:
        names, self._scanned_names = self._scanned_names, None
        return NameIndex(self._strings, self._str_base, self._words, self._offsets, self._first_id,
                         unique_strings, names)

    # ------------------------------------------------------------------ strings
    @property
    def _str_end(self) -> int:
        return self._str_base + len(self._strings)

    def string(self, offset: int) -> str:
        """The string at `offset` of the (base + own) string table."""
        if offset < self._str_base:
            assert self.base is not None
            return self.base.string(offset)
        local = offset - self._str_base
        if local >= len(self._strings):
            raise BTFError(f"BTF string offset {offset} out of range")
        end = self._strings.find(b"\0", local)
        return self._strings[local:end].decode("utf-8", "replace")

    def _string_positions(self, pattern: bytes) -> List[int]:
        """Every offset of the (base + own) string table at which `pattern` starts."""
        out = self.base._string_positions(pattern) if self.base is not None else []
        out.extend(self._idx().positions(pattern))
        return out

    # ------------------------------------------------------------------ types
    def __len__(self) -> int:
        return self._first_id + len(self._offsets) + len(self._added)

    def __iter__(self) -> Iterator[BtfType]:
        return iter(self.types)

    def type(self, type_id: int) -> BtfType:
        t = self._cache.get(type_id)   # decoded, replaced and added types alike
        if t is not None:
            return t
        if type_id < 0 or type_id >= len(self):
            raise BTFError(f"BTF type id {type_id} out of range (0..{len(self) - 1})")
        if type_id < self._first_id:
            if self.base is None:
                return Void()
            return self.base.type(type_id)
        t = self._replaced.get(type_id)
        if t is None:
            local = type_id - self._first_id
            if local >= len(self._offsets):
                t = self._added[local - len(self._offsets)]
            else:
                t = self._decode(self._offsets[local])
        self._cache[type_id] = t
        return t

    def _decode(self, i: int) -> BtfType:
        w = self._words
        name = self.string(w[i])
        info, st = w[i + 1], w[i + 2]
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        kflag = bool(info >> 31)
        j = i + 3
        if kind == BtfKind.INT:
            enc = w[j]
            return Int(name, st, (enc >> 24) & 0xF, (enc >> 16) & 0xFF, enc & 0xFF)
        if kind == BtfKind.PTR:
            return Ptr(st, name)
        if kind == BtfKind.ARRAY:
            return Array(w[j], w[j + 1], w[j + 2], name)
        if kind in (BtfKind.STRUCT, BtfKind.UNION):
            members = []
            for k in range(j, j + 3 * vlen, 3):
                off = w[k + 2]
                if kflag:
                    members.append(Member(self.string(w[k]), w[k + 1], off & 0xFFFFFF, off >> 24))
                else:
                    members.append(Member(self.string(w[k]), w[k + 1], off, 0))
            cls = Struct if kind == BtfKind.STRUCT else Union
            return cls(name, st, members)
        if kind == BtfKind.ENUM:
            conv = _s32 if kflag else int
            vals = [EnumValue(self.string(w[k]), conv(w[k + 1])) for k in range(j, j + 2 * vlen, 2)]
            return Enum(name, st, kflag, vals)
        if kind == BtfKind.ENUM64:
            vals = []
            for k in range(j, j + 3 * vlen, 3):
                v = w[k + 1] | (w[k + 2] << 32)
                if kflag and v >> 63:
                    v -= 1 << 64
                vals.append(EnumValue(self.string(w[k]), v))
            return Enum64(name, st, kflag, vals)
        if kind == BtfKind.FWD:
            return Fwd(name, kflag)
        if kind == BtfKind.TYPEDEF:
            return Typedef(name, st)
        if kind == BtfKind.VOLATILE:
            return Volatile(st, name)
        if kind == BtfKind.CONST:
            return Const(st, name)
        if kind == BtfKind.RESTRICT:
            return Restrict(st, name)
        if kind == BtfKind.FUNC:
            return Func(name, st, vlen)
        if kind == BtfKind.FUNC_PROTO:
            params = [Param(self.string(w[k]), w[k + 1]) for k in range(j, j + 2 * vlen, 2)]
            return FuncProto(st, params, name)
        if kind == BtfKind.VAR:
            return Var(name, st, w[j])
        if kind == BtfKind.DATASEC:
            return Datasec(name, st, [VarSecInfo(w[k], w[k + 1], w[k + 2]) for k in range(j, j + 3 * vlen, 3)])
        if kind == BtfKind.FLOAT:
            return Float(name, st)
        if kind == BtfKind.DECL_TAG:
            return DeclTag(name, st, _s32(w[j]), kflag)
        if kind == BtfKind.TYPE_TAG:
            return TypeTag(name, st, kflag)
        raise BTFError(f"unknown BTF kind {kind}")  # _scan rejects these; kept for safety

    def find(self, name: str, kind: Optional[BtfKind] = None) -> List[int]:
        """All type ids named `name` (optionally of one kind), in id order. The first call
        sorts the name offsets (~15 ms on vmlinux); each new name then costs one search of
        the string table (~0.5 ms) and a repeated name a dict hit."""
        if not name:
            return []
        key = name.encode()
        ids = self.base.find(name, kind) if self.base is not None else []
        idx = self._idx()
        raw = idx.memo(key)
        if raw is None:
            raw = idx.remember(key, idx.ids_named_at(self._string_positions(key + b"\0")))
        for tid in self._edited(raw, name.__eq__):
            if kind is None or self.type(tid).kind == kind:
                ids.append(tid)
        return ids

    def prefetch(self, names: Iterable[str], prefixes: Iterable[str] = ()) -> None:
        """Announce find(name) and ids_with_prefix(prefix) calls to come: their types are then
        found together, in one pass over the types' names (btf_index.NameIndex.prefetch)."""
        if self.base is not None:
            self.base.prefetch(names, prefixes)
        idx = self._idx()
        found = idx.positions_many(self.lookup_patterns(names, prefixes))
        idx.prefetch(off for offs in found.values() for off in offs)

    @staticmethod
    def lookup_patterns(names: Iterable[str], prefixes: Iterable[str]) -> List[bytes]:
        """What find(name) and ids_with_prefix(prefix) search the string table for."""
        return [n.encode() + b"\0" for n in names if n] + [p.encode() for p in prefixes if p]

    def use_known_positions(self, file_key: tuple, found: Mapping[bytes, Sequence[int]],
                            find_types: bool = True) -> bool:
        """Take search_kernel_strings() answers for this kernel BTF's look-ups, if they were
        made in the same unchanged file (load_kernel's key). Whether they were taken.
        find_types=False: the types named there are found with the next prefetch()."""
        if self.base is not None or self._file_key is None or tuple(file_key) != self._file_key:
            return False
        self._idx().know_positions(found, find_types)
        return True

    def ids_with_prefix(self, prefix: str) -> List[int]:
        """Ids of the types whose name starts with `prefix` (CO-RE: "sk_buff___" finds every
        flavor of sk_buff), by searching the string table, without decoding every type."""
        if not prefix:
            raise ValueError("ids_with_prefix needs a non-empty prefix")
        ids = self.base.ids_with_prefix(prefix) if self.base is not None else []
        key = b"\0" + prefix.encode()   # memo key; no name holds a NUL
        idx = self._idx()
        raw = idx.memo(key)
        if raw is None:
            raw = idx.remember(key, idx.ids_named_at(self._string_positions(key[1:])))
        ids.extend(self._edited(raw, lambda n: n.startswith(prefix)))
        return ids

    def _edited(self, raw: Iterable[int], match: Callable[[str], bool]) -> List[int]:
        """Own ids answering a query: the raw answer minus replaced types, plus the replaced
        and added types whose name matches, ascending."""
        rep = self._replaced
        if not rep and not self._added:
            return list(raw)
        own = {i for i in raw if i not in rep}
        own.update(tid for tid, t in rep.items() if match(t.name))
        start = self._first_id + len(self._offsets)
        own.update(start + n for n, t in enumerate(self._added) if match(t.name))
        return sorted(own)

    def names(self) -> Iterator[Tuple[int, str]]:
        """(type id, name) of every named type, base first, without decoding the types."""
        if self.base is not None:
            yield from self.base.names()
        by_off: Dict[int, str] = {}
        pos = 0
        for chunk in self._strings.split(b"\0"):
            if chunk:
                by_off[self._str_base + pos] = chunk.decode("utf-8", "replace")
            pos += len(chunk) + 1
        w, first = self._words, self._first_id
        for n, i in enumerate(self._offsets):
            tid = first + n
            if tid in self._replaced:
                name = self._replaced[tid].name
            else:
                off = w[i]
                if not off:
                    continue
                name = by_off.get(off)
                if name is None:   # an offset into the middle of a string, or the base's
                    name = self.string(off)
            if name:
                yield tid, name
        start = first + len(self._offsets)
        for n, t in enumerate(self._added):
            if t.name:
                yield start + n, t.name

    def names_containing(self, part: str) -> List[Tuple[int, str]]:
        """(type id, name) of the types whose name contains `part`, found by searching the
        string table rather than decoding every type."""
        out: List[Tuple[int, str]] = []
        if self.base is not None:
            out.extend(self.base.names_containing(part))
        pat = part.encode()
        idx = self._idx()
        own = set()
        b: Optional[Btf] = self
        while b is not None:   # split types may be named by their base's strings
            s, str_base = b._strings, b._str_base
            pos = s.find(pat) if pat else -1
            while pos >= 0:
                # a name may begin anywhere in this string up to where `part` starts
                start = s.rfind(b"\0", 0, pos) + 1
                own.update(idx.ids_named_between(str_base + start, str_base + pos))
                pos = s.find(pat, pos + 1)
            b = b.base
        own.difference_update(self._replaced)
        first_added = self._first_id + len(self._offsets)
        extra = list(self._replaced.items()) + [(first_added + n, t) for n, t in enumerate(self._added)]
        own.update(tid for tid, t in extra if part in t.name)
        out.extend((tid, self.type(tid).name) for tid in sorted(own))
        return out

    def resolve(self, type_id: int) -> int:
        """Follow typedef/volatile/const/restrict/type_tag to the underlying type id."""
        for _ in range(_MAX_CHAIN):
            t = self.type(type_id)
            if t.kind not in MODIFIERS:
                return type_id
            type_id = t.type  # type: ignore[union-attr]
        raise BTFError(f"BTF modifier chain too long or cyclic at type {type_id}")

    def sizeof(self, type_id: int) -> int:
        """Size in bytes of a type (pointers are 8 bytes: BPF is a 64-bit target)."""
        total = 1
        for _ in range(_MAX_CHAIN):
            t = self.type(type_id)
            k = t.kind
            if k in (BtfKind.INT, BtfKind.STRUCT, BtfKind.UNION, BtfKind.ENUM, BtfKind.ENUM64,
                     BtfKind.FLOAT, BtfKind.DATASEC):
                return total * t.size  # type: ignore[union-attr]
            if k == BtfKind.PTR:
                return total * 8
            if k == BtfKind.ARRAY:
                total *= t.nelems  # type: ignore[union-attr]
                type_id = t.type  # type: ignore[union-attr]
            elif k in MODIFIERS or k == BtfKind.VAR:
                type_id = t.type  # type: ignore[union-attr]
            else:
                raise BTFError(f"BTF type {type_id} ({k.name}) has no size")
        raise BTFError(f"BTF type chain too long or cyclic at type {type_id}")

    def enum_values(self, enum_name: str) -> Dict[str, int]:
        """Name -> value of the first ENUM or ENUM64 called `enum_name`.

        For a kernel BTF (load_kernel, unedited) the answer is remembered per unchanged file,
        so it outlives the parse (see load_kernel)."""
        memo_key = None
        if self._file_key is not None and not self._replaced and not self._added:
            memo_key = self._file_key + (enum_name,)
            hit = _ENUMS.get(memo_key)
            if hit is not None:
                return dict(hit)
        for tid in self.find(enum_name):
            t = self.type(tid)
            if t.kind in (BtfKind.ENUM, BtfKind.ENUM64):
                values = {v.name: v.value for v in t.values}  # type: ignore[union-attr]
                if memo_key is not None:
                    _ENUMS[memo_key] = dict(values)
                return values
        raise BTFError(f"no enum named {enum_name!r} in BTF")

    # ------------------------------------------------------------------ editing
    def add_type(self, t: BtfType) -> int:
        """Append a type; returns its id."""
        if isinstance(t, Void):
            raise BTFError("cannot add a void type")
        self._added.append(t)
        return len(self) - 1

    def replace(self, type_id: int, t: BtfType) -> None:
        """Replace a type in place, keeping every id stable."""
        if type_id < self._first_id or type_id >= len(self):
            raise BTFError(f"cannot replace BTF type {type_id}: not part of this BTF")
        local = type_id - self._first_id
        if local >= len(self._offsets):
            self._added[local - len(self._offsets)] = t
        else:
            self._replaced[type_id] = t
        self._cache.pop(type_id, None)

    # ------------------------------------------------------------------ encoding
    def to_bytes(self) -> bytes:
        """Raw BTF in native byte order. Unmodified types and the original string
        section are kept verbatim, so offsets referenced from .BTF.ext stay valid."""
        strtab = StringTable(self._strings, self._str_base)
        out = array("I")
        w = self._words
        n_raw = len(self._offsets)
        for local in range(n_raw):
            tid = self._first_id + local
            t = self._replaced.get(tid)
            if t is None:
                start = self._offsets[local]
                end = self._offsets[local + 1] if local + 1 < n_raw else len(w)
                out.extend(w[start:end])
            else:
                out.extend(encode_type(t, strtab))
        for t in self._added:
            out.extend(encode_type(t, strtab))
        types = out.tobytes()
        strings = bytes(strtab.data)
        hdr = array("I", [HEADER_SIZE, 0, len(types), len(types), len(strings)]).tobytes()
        magic = BTF_MAGIC.to_bytes(2, sys.byteorder)
        return magic + bytes([1, 0]) + hdr + types + strings


def _header(data: bytes) -> Tuple[bool, int, int, int, int, int]:
    """(byte swap needed, hdr_len, type_off, type_len, str_off, str_len) of a BTF header."""
    magic = int.from_bytes(data[0:2], sys.byteorder)
    if magic == BTF_MAGIC:
        swap = False
    elif magic == 0x9FEB:
        swap = True
    else:
        raise BTFError(f"bad BTF magic 0x{magic:04x}")
    hdr = array("I")
    hdr.frombytes(data[4:HEADER_SIZE])
    if swap:
        hdr.byteswap()
    hdr_len, type_off, type_len, str_off, str_len = hdr
    if data[2] != 1:
        raise BTFError(f"unsupported BTF version {data[2]}")
    if hdr_len < HEADER_SIZE:
        raise BTFError(f"bad BTF header length {hdr_len}")
    if type_off % 4 or type_len % 4:
        raise BTFError("BTF type section is not 4-byte aligned")
    return swap, hdr_len, type_off, type_len, str_off, str_len


def btf_section_from_elf(data: bytes, what: str = "ELF file") -> bytes:
    """The raw .BTF section of an ELF file (a vmlinux, or a BPF object)."""
    import io

    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(io.BytesIO(data))
        sec = elf.get_section_by_name(".BTF")
        if sec is None:
            raise BTFError(f"{what} has no .BTF section")
        return sec.data()
    except BTFError:
        raise
    except (ELFError, ValueError, EOFError, OSError, KeyError, IndexError) as e:
        raise BTFError(f"{what}: cannot read ELF: {e}") from e


FEATURES = frozenset({"func", "func_global", "datasec", "qmark_datasec", "float", "decl_tag",
                      "type_tag", "enum64"})


def sanitize(btf: Btf, features) -> Btf:
    """A copy of `btf` the running kernel accepts, given the BTF `features` it
    supports (names from FEATURES). Unsupported kinds are rewritten in place
    as libbpf does, so every type id (used by func_info, line_info, maps and
    CO-RE) keeps its meaning; at most three types are appended."""
    feats = set(features)
    unknown = feats - FEATURES
    if unknown:
        raise ValueError(f"unknown BTF features: {sorted(unknown)}")
    out = Btf.parse(btf.to_bytes(), base=btf.base)
    has = feats.__contains__
    placeholder = 0
    ksym_var = 0
    first = len(btf.base) if btf.base is not None else 1
    for tid in range(first, len(out)):
        t = out.type(tid)
        k = t.kind
        new: Optional[BtfType] = None
        if k == BtfKind.FUNC and t.linkage == 2:
            # an extern kernel function (__ksym): the call names the kernel's own function
            # (kfunc.py), this type only has to be valid. No kernel takes extern linkage, and a
            # FUNC needs named parameters, which clang does not write for a declaration.
            new = Typedef(t.name, t.type)
        elif k == BtfKind.DATASEC and t.name == ".ksyms":
            # its entries are those functions, and a DATASEC may only list variables: one int
            # variable stands for each (as libbpf does)
            n = len(t.vars)
            if not ksym_var:
                ksym_var = out.add_type(Int("int", 4, INT_SIGNED, 0, 32))
                if has("datasec"):
                    ksym_var = out.add_type(Var("dummy_ksym", ksym_var, 1))
            new = (Datasec(t.name, 4 * n, [VarSecInfo(ksym_var, 4 * i, 4) for i in range(n)]) if has("datasec")
                   else Struct("_ksyms", 4 * n, [Member(f"ksym{i}", ksym_var, 32 * i) for i in range(n)]))
        elif (k == BtfKind.VAR and not has("datasec")) or (k == BtfKind.DECL_TAG and not has("decl_tag")):
            # size 1: a bigger int could exceed a small variable and fail validation
            new = Int(t.name, 1, 0, 0, 8)
        elif k == BtfKind.DATASEC and not has("datasec"):
            name = t.name.replace(".", "_").replace("?", "_")
            members = [Member(out.type(v.type).name, v.type, v.offset * 8) for v in t.vars]
            new = Struct(name, t.size, members)
        elif k == BtfKind.DATASEC and not has("qmark_datasec") and t.name.startswith("?"):
            new = Datasec("_" + t.name[1:], t.size, list(t.vars))
        elif k == BtfKind.FUNC_PROTO and not has("func"):
            new = Enum(t.name, 4, False, [EnumValue(p.name, p.type) for p in t.params])
        elif k == BtfKind.FUNC and not has("func"):
            new = Typedef(t.name, t.type)
        elif k == BtfKind.FUNC and not has("func_global"):
            new = Func(t.name, t.type, 0)
        elif k == BtfKind.FLOAT and not has("float"):
            new = Struct("", t.size, [])
        elif k == BtfKind.TYPE_TAG and not has("type_tag"):
            new = Const(t.type)
        elif k == BtfKind.ENUM and not has("enum64") and t.signed:
            new = Enum(t.name, t.size, False, list(t.values))
        elif k == BtfKind.ENUM64 and not has("enum64"):
            if not placeholder:
                placeholder = out.add_type(Int("enum64_placeholder", 1, 0, 0, 8))
            new = Union(t.name, t.size, [Member(v.name, placeholder, 0) for v in t.values])
        if new is not None:
            out.replace(tid, new)
    return out
