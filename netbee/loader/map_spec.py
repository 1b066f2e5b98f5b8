"""What a map is before it exists (MapSpec), where a program refers to one (MapReloc), and the
global variables that live in data maps.

Shared by the ELF object model (elf.py) and by programs prepared earlier (prepared.py); kept
apart so the latter needs neither the ELF parser nor BTF.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

from netbee.loader import insn as I
from netbee.loader.errors import ObjectFileError
from netbee.loader.record import Record

# global variable name -> (data map name, offset in its value, size)
Globals = Dict[str, Tuple[str, int, int]]


class MapReloc(Record):
    """An ld_imm64 that must receive a map: its fd (PSEUDO_MAP_FD) or the address
    of `offset` inside its value (PSEUDO_MAP_VALUE; the offset is already in the
    second slot's imm, as the kernel wants)."""
    __slots__ = ("insn_index", "map_name", "src", "offset")

    def __init__(self, insn_index: int,
                 map_name: str, src: int = I.BPF_PSEUDO_MAP_FD, offset: int = 0) -> None:
        self.insn_index = insn_index
        self.map_name = map_name
        self.src = src
        self.offset = offset


class MapSpec(Record):
    __slots__ = ("name", "type", "key_size", "value_size", "max_entries", "flags", "data", "btf_key_type_id",
                 "btf_value_type_id", "section", "pinning", "numa_node", "map_extra")

    def __init__(self, name: str,
                 type: int, key_size: int, value_size: int, max_entries: int, flags: int = 0,
                 data: Optional[bytes] = None, btf_key_type_id: int = 0, btf_value_type_id: int = 0,
                 section: str = ".maps", pinning: int = 0, numa_node: int = 0, map_extra: int = 0) -> None:
        self.name = name
        self.type = type
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.flags = flags
        self.data = data   # global data maps: the initial value
        self.btf_key_type_id = btf_key_type_id
        self.btf_value_type_id = btf_value_type_id
        self.section = section
        self.pinning = pinning   # parsed, ignored by NetBee
        self.numa_node = numa_node
        self.map_extra = map_extra


def write_global(maps: Dict[str, MapSpec], globals_: Globals, name: str, value: bytes) -> None:
    """Set a global variable's initial value (e.g. a `const volatile` config) in its map's data."""
    where = globals_.get(name)
    if where is None:
        known = ", ".join(sorted(globals_)) or "none"
        raise ObjectFileError(f"no global variable {name!r} in the object (known: {known})")
    map_name, offset, size = where
    value = bytes(value)
    if len(value) != size:
        raise ObjectFileError(f"global {name!r} is {size} bytes, got a value of {len(value)}")
    spec = maps[map_name]
    data = bytearray(spec.data if spec.data is not None else bytes(spec.value_size))
    data[offset:offset + size] = value
    spec.data = bytes(data)


def read_global(maps: Dict[str, MapSpec], globals_: Globals, name: str) -> bytes:
    map_name, offset, size = globals_[name]
    data = maps[map_name].data or bytes(maps[map_name].value_size)
    return data[offset:offset + size]
