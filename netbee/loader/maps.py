"""BPF maps: create from a MapSpec or explicit parameters; lookup, update, delete, iterate, freeze."""
from __future__ import annotations

import ctypes
import errno
import functools
import mmap
import re
import struct
import sys
from enum import IntEnum
from typing import Any, Iterator, List, Optional, Tuple, Union

from netbee.loader import syscall as sc
from netbee.loader.errors import SyscallError


class MapType(IntEnum):
    HASH = 1
    ARRAY = 2
    PERF_EVENT_ARRAY = 4
    PERCPU_HASH = 5
    PERCPU_ARRAY = 6
    STACK_TRACE = 7
    LRU_HASH = 9
    LRU_PERCPU_HASH = 10
    RINGBUF = 27


F_NO_PREALLOC = 1 << 0
F_RDONLY = 1 << 3
F_WRONLY = 1 << 4
F_RDONLY_PROG = 1 << 7
F_WRONLY_PROG = 1 << 8
F_MMAPABLE = 1 << 10

UPDATE_ANY = 0
UPDATE_NOEXIST = 1
UPDATE_EXIST = 2

PERCPU_TYPES = (MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH)
POSSIBLE_CPUS_PATH = "/sys/devices/system/cpu/possible"

Key = Union[bytes, bytearray, memoryview, int]


def parse_cpu_list(text: str) -> List[int]:
    """'0-3,5' -> [0, 1, 2, 3, 5] (the kernel's cpulist format)."""
    cpus: List[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


@functools.lru_cache(maxsize=None)
def possible_cpus() -> int:
    """Number of possible CPUs: the kernel sizes per-CPU values by this, not by online CPUs."""
    with open(POSSIBLE_CPUS_PATH) as f:
        return len(parse_cpu_list(f.read()))


def kernel_name(name: str) -> str:
    """Kernel object names: at most 15 characters of [A-Za-z0-9_.]."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", name)[:15]


def is_frozen_data(spec: Any) -> bool:
    """A global-data map that Map.from_spec makes read-only for programs and freezes (.rodata)."""
    return spec.data is not None and bool(".rodata" in spec.name or spec.flags & F_RDONLY_PROG)


class Map(sc.KernelObject):
    """A kernel map owned by this process."""

    def __init__(self, name: str, map_type: int, key_size: int, value_size: int, max_entries: int,
                 flags: int = 0, *, btf_fd: Optional[int] = None, btf_key_type_id: int = 0,
                 btf_value_type_id: int = 0) -> None:
        self._fd: Optional[sc.Fd] = None  # set once the kernel gave us one
        self.name = name
        self.type = int(map_type)
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.flags = flags
        attr = sc.MapCreateAttr(map_type=self.type, key_size=key_size, value_size=value_size,
                                max_entries=max_entries, map_flags=flags,
                                map_name=kernel_name(name).encode())
        if btf_fd is not None and (btf_key_type_id or btf_value_type_id):
            attr.btf_fd = btf_fd
            attr.btf_key_type_id = btf_key_type_id
            attr.btf_value_type_id = btf_value_type_id
        what = f"map {name!r} (type {self.type}, key {key_size}, value {value_size}, entries {max_entries})"
        if self.type == MapType.RINGBUF and (max_entries < mmap.PAGESIZE or max_entries & (max_entries - 1)):
            what += f"; a ring buffer size must be a power of two and at least {mmap.PAGESIZE} bytes"
        self._fd = sc.bpf_fd(sc.Cmd.MAP_CREATE, attr, what=what)

    @classmethod
    def adopt(cls, fd: "sc.Fd", name: str) -> "Map":
        """A Map over an fd obtained elsewhere (a pinned map): its shape comes from the kernel."""
        m = cls.__new__(cls)
        m._fd, m.name = fd, name
        try:
            info = m.info()
        except BaseException:
            fd.close()
            raise
        m.type, m.key_size, m.value_size = info.type, info.key_size, info.value_size
        m.max_entries, m.flags = info.max_entries, info.map_flags
        return m

    @classmethod
    def from_spec(cls, spec: Any, *, btf_fd: Optional[int] = None,
                  max_entries: Optional[int] = None, mmapable: bool = False) -> "Map":
        """Create from an elf.MapSpec. Global-data maps (spec.data set) get their contents written
        now; a .rodata map is read-only for programs and frozen, so the verifier can trust it."""
        flags = spec.flags
        rodata = is_frozen_data(spec)
        if spec.data is not None:
            flags |= F_RDONLY_PROG if rodata else 0
            flags |= F_MMAPABLE if mmapable and not rodata else 0
        m = cls(spec.name, spec.type, spec.key_size, spec.value_size,
                max_entries if max_entries is not None else spec.max_entries, flags, btf_fd=btf_fd,
                btf_key_type_id=spec.btf_key_type_id, btf_value_type_id=spec.btf_value_type_id)
        try:
            if spec.data is not None:
                data = bytes(spec.data).ljust(spec.value_size, b"\0")
                m.update(0, data)
                if rodata:
                    m.freeze()
        except BaseException:
            m.close()
            raise
        return m


    def __repr__(self) -> str:
        return f"Map({self.name!r}, type={self.type}, fd={None if self.closed else self.fd})"

    # --- element access ---------------------------------------------------------------------------
    @property
    def percpu(self) -> bool:
        return self.type in PERCPU_TYPES

    @property
    def _value_bytes(self) -> int:
        if self.percpu:
            return ((self.value_size + 7) & ~7) * possible_cpus()
        return self.value_size

    def _key(self, key: Key) -> ctypes.Array:
        if isinstance(key, int):
            key = key.to_bytes(self.key_size, sys.byteorder)
        if len(key) != self.key_size:
            raise ValueError(f"map {self.name}: key of {len(key)} bytes, expected {self.key_size}")
        return ctypes.create_string_buffer(bytes(key), self.key_size)

    def _elem(self, cmd: int, key: Optional[ctypes.Array], value: Optional[ctypes.Array],
              flags: int = 0) -> None:
        attr = sc.MapElemAttr(map_fd=self.fd, key=ctypes.addressof(key) if key is not None else 0,
                              value=ctypes.addressof(value) if value is not None else 0, flags=flags)
        sc.bpf(cmd, attr, what=f"map {self.name!r}")

    def lookup_raw(self, key: Key) -> Optional[bytes]:
        """Value bytes (for per-CPU maps: all CPUs, each rounded up to 8 bytes), None if absent."""
        kb = self._key(key)
        vb = ctypes.create_string_buffer(max(self._value_bytes, 1))
        try:
            self._elem(sc.Cmd.MAP_LOOKUP_ELEM, kb, vb)
        except SyscallError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        return vb.raw[:self._value_bytes]

    def lookup(self, key: Key) -> Optional[bytes]:
        if self.percpu:
            raise TypeError(f"map {self.name} is per-CPU: use lookup_percpu()")
        return self.lookup_raw(key)

    def lookup_percpu(self, key: Key) -> Optional[List[bytes]]:
        """One value per possible CPU."""
        raw = self.lookup_raw(key)
        if raw is None:
            return None
        stride = (self.value_size + 7) & ~7
        return [raw[i * stride:i * stride + self.value_size] for i in range(possible_cpus())]

    def update(self, key: Key, value: bytes, flags: int = UPDATE_ANY) -> None:
        if self.percpu:
            raise TypeError(f"map {self.name} is per-CPU: use update_percpu()")
        if len(value) != self.value_size:
            raise ValueError(f"map {self.name}: value of {len(value)} bytes, expected {self.value_size}")
        self._elem(sc.Cmd.MAP_UPDATE_ELEM, self._key(key),
                   ctypes.create_string_buffer(bytes(value), len(value)), flags)

    def update_percpu(self, key: Key, values: List[bytes], flags: int = UPDATE_ANY) -> None:
        n = possible_cpus()
        if len(values) != n:
            raise ValueError(f"map {self.name}: {len(values)} per-CPU values, expected {n}")
        stride = (self.value_size + 7) & ~7
        blob = b"".join(bytes(v).ljust(stride, b"\0") for v in values)
        self._elem(sc.Cmd.MAP_UPDATE_ELEM, self._key(key), ctypes.create_string_buffer(blob, len(blob)),
                   flags)

    def delete(self, key: Key) -> bool:
        """True if the key was there."""
        try:
            self._elem(sc.Cmd.MAP_DELETE_ELEM, self._key(key), None)
        except SyscallError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
        return True

    def keys(self) -> Iterator[bytes]:
        """Iterate keys with MAP_GET_NEXT_KEY (a NULL key starts the walk)."""
        cur: Optional[ctypes.Array] = None
        nxt = ctypes.create_string_buffer(self.key_size)
        while True:
            try:
                self._elem(sc.Cmd.MAP_GET_NEXT_KEY, cur, nxt)
            except SyscallError as e:
                if e.errno == errno.ENOENT:
                    return
                raise
            k = nxt.raw
            yield k
            cur = ctypes.create_string_buffer(k, self.key_size)

    def items(self) -> Iterator[Tuple[bytes, Any]]:
        """(key, value) pairs; values are lists per CPU for per-CPU maps. Keys deleted while we
        walk are skipped."""
        for k in self.keys():
            v = self.lookup_percpu(k) if self.percpu else self.lookup(k)
            if v is not None:
                yield k, v

    def freeze(self) -> None:
        """Make the map read-only for user space from now on (BPF_MAP_FREEZE)."""
        sc.bpf(sc.Cmd.MAP_FREEZE, sc.MapFreezeAttr(map_fd=self.fd), what=f"map {self.name!r}")

    def mmap(self) -> mmap.mmap:
        """Shared read-write mapping of a BPF_F_MMAPABLE array's values (close it before the map)."""
        if not self.flags & F_MMAPABLE:
            raise ValueError(f"map {self.name} was not created mmapable")
        size = (self.value_size * self.max_entries + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
        return mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def stack(self, stack_id: int) -> Optional[List[int]]:
        """Addresses of one stack of a STACK_TRACE map (trailing zero frames dropped)."""
        raw = self.lookup(stack_id)
        if raw is None:
            return None
        frames = list(struct.unpack(f"={self.value_size // 8}Q", raw))
        while frames and frames[-1] == 0:
            frames.pop()
        return frames

    def info(self) -> sc.MapInfo:
        return sc.obj_info(self.fd, sc.MapInfo())
