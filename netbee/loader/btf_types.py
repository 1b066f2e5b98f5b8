"""BTF type model: the kinds and one record class per kind, as btf.py decodes them.

Plain data with no behaviour: btf.py parses and encodes these, core.py and the
loader read them. Importing them from netbee.loader.btf works too.

Written out rather than made by @dataclass: both processes of a start import this module, and
decorating its 24 classes took ~7.5 ms of each (netbee/loader/record.py).
"""
from __future__ import annotations

import typing
from enum import IntEnum
from typing import ClassVar, List, Optional

from netbee.loader.record import Record

INT_SIGNED = 1
INT_CHAR = 2
INT_BOOL = 4


class BtfKind(IntEnum):
    UNKN = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


class Void(Record):
    __slots__ = ("name",)
    kind: ClassVar[BtfKind] = BtfKind.UNKN

    def __init__(self, name: str = "") -> None:
        self.name = name


class Int(Record):
    __slots__ = ("name", "size", "encoding", "bits_offset", "nr_bits")
    kind: ClassVar[BtfKind] = BtfKind.INT

    def __init__(self, name: str, size: int, encoding: int = 0, bits_offset: int = 0, nr_bits: int = 0) -> None:
        self.name, self.size, self.encoding, self.bits_offset, self.nr_bits = name, size, encoding, bits_offset, nr_bits


class Ptr(Record):
    __slots__ = ("type", "name")
    kind: ClassVar[BtfKind] = BtfKind.PTR

    def __init__(self, type: int, name: str = "") -> None:
        self.type, self.name = type, name


class Array(Record):
    __slots__ = ("type", "index_type", "nelems", "name")
    kind: ClassVar[BtfKind] = BtfKind.ARRAY

    def __init__(self, type: int, index_type: int, nelems: int, name: str = "") -> None:
        self.type, self.index_type, self.nelems, self.name = type, index_type, nelems, name


class Member(Record):
    __slots__ = ("name", "type", "bit_offset", "bitfield_size")

    def __init__(self, name: str, type: int, bit_offset: int, bitfield_size: int = 0) -> None:
        self.name, self.type, self.bit_offset, self.bitfield_size = name, type, bit_offset, bitfield_size


class Struct(Record):
    __slots__ = ("name", "size", "members")
    kind: ClassVar[BtfKind] = BtfKind.STRUCT

    def __init__(self, name: str, size: int, members: Optional[List[Member]] = None) -> None:
        self.name, self.size = name, size
        self.members = [] if members is None else members


class Union(Record):
    __slots__ = ("name", "size", "members")
    kind: ClassVar[BtfKind] = BtfKind.UNION

    def __init__(self, name: str, size: int, members: Optional[List[Member]] = None) -> None:
        self.name, self.size = name, size
        self.members = [] if members is None else members


class EnumValue(Record):
    __slots__ = ("name", "value")

    def __init__(self, name: str, value: int) -> None:
        self.name, self.value = name, value


class Enum(Record):
    __slots__ = ("name", "size", "signed", "values")
    kind: ClassVar[BtfKind] = BtfKind.ENUM

    def __init__(self, name: str, size: int, signed: bool = False, values: Optional[List[EnumValue]] = None) -> None:
        self.name, self.size, self.signed = name, size, signed
        self.values = [] if values is None else values


class Enum64(Record):
    __slots__ = ("name", "size", "signed", "values")
    kind: ClassVar[BtfKind] = BtfKind.ENUM64

    def __init__(self, name: str, size: int, signed: bool = False, values: Optional[List[EnumValue]] = None) -> None:
        self.name, self.size, self.signed = name, size, signed
        self.values = [] if values is None else values


class Fwd(Record):
    __slots__ = ("name", "is_union")
    kind: ClassVar[BtfKind] = BtfKind.FWD

    def __init__(self, name: str, is_union: bool = False) -> None:
        self.name, self.is_union = name, is_union


class Typedef(Record):
    __slots__ = ("name", "type")
    kind: ClassVar[BtfKind] = BtfKind.TYPEDEF

    def __init__(self, name: str, type: int) -> None:
        self.name, self.type = name, type


class Volatile(Record):
    __slots__ = ("type", "name")
    kind: ClassVar[BtfKind] = BtfKind.VOLATILE

    def __init__(self, type: int, name: str = "") -> None:
        self.type, self.name = type, name


class Const(Record):
    __slots__ = ("type", "name")
    kind: ClassVar[BtfKind] = BtfKind.CONST

    def __init__(self, type: int, name: str = "") -> None:
        self.type, self.name = type, name


class Restrict(Record):
    __slots__ = ("type", "name")
    kind: ClassVar[BtfKind] = BtfKind.RESTRICT

    def __init__(self, type: int, name: str = "") -> None:
        self.type, self.name = type, name


class TypeTag(Record):
    __slots__ = ("name", "type", "kflag")
    kind: ClassVar[BtfKind] = BtfKind.TYPE_TAG

    def __init__(self, name: str, type: int, kflag: bool = False) -> None:
        self.name, self.type = name, type
        self.kflag = kflag   # newer kernels: an attribute rather than a tag


class Func(Record):
    __slots__ = ("name", "type", "linkage")
    kind: ClassVar[BtfKind] = BtfKind.FUNC

    def __init__(self, name: str, type: int, linkage: int = 0) -> None:
        self.name, self.type = name, type
        self.linkage = linkage   # 0 static, 1 global, 2 extern


class Param(Record):
    __slots__ = ("name", "type")

    def __init__(self, name: str, type: int) -> None:
        self.name, self.type = name, type


class FuncProto(Record):
    __slots__ = ("ret_type", "params", "name")
    kind: ClassVar[BtfKind] = BtfKind.FUNC_PROTO

    def __init__(self, ret_type: int, params: Optional[List[Param]] = None, name: str = "") -> None:
        self.ret_type, self.name = ret_type, name
        self.params = [] if params is None else params


class Var(Record):
    __slots__ = ("name", "type", "linkage")
    kind: ClassVar[BtfKind] = BtfKind.VAR

    def __init__(self, name: str, type: int, linkage: int = 0) -> None:
        self.name, self.type, self.linkage = name, type, linkage


class VarSecInfo(Record):
    __slots__ = ("type", "offset", "size")

    def __init__(self, type: int, offset: int, size: int) -> None:
        self.type, self.offset, self.size = type, offset, size


class Datasec(Record):
    __slots__ = ("name", "size", "vars")
    kind: ClassVar[BtfKind] = BtfKind.DATASEC

    def __init__(self, name: str, size: int, vars: Optional[List[VarSecInfo]] = None) -> None:
        self.name, self.size = name, size
        self.vars = [] if vars is None else vars


class Float(Record):
    __slots__ = ("name", "size")
    kind: ClassVar[BtfKind] = BtfKind.FLOAT

    def __init__(self, name: str, size: int) -> None:
        self.name, self.size = name, size


class DeclTag(Record):
    __slots__ = ("name", "type", "component_idx", "kflag")
    kind: ClassVar[BtfKind] = BtfKind.DECL_TAG

    def __init__(self, name: str, type: int, component_idx: int = -1, kflag: bool = False) -> None:
        self.name, self.type, self.component_idx, self.kflag = name, type, component_idx, kflag


BtfType = typing.Union[Void, Int, Ptr, Array, Struct, Union, Enum, Enum64, Fwd, Typedef, Volatile,
                Const, Restrict, TypeTag, Func, FuncProto, Var, Datasec, Float, DeclTag]

MODIFIERS = (BtfKind.TYPEDEF, BtfKind.VOLATILE, BtfKind.CONST, BtfKind.RESTRICT, BtfKind.TYPE_TAG)
