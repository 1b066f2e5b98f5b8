"""BTF type model: the kinds and one dataclass per kind, as btf.py decodes them.

Plain data with no behaviour: btf.py parses and encodes these, core.py and the
loader read them. Importing them from netbee.loader.btf works too.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar, List

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


@dataclass
class Void:
    kind: ClassVar[BtfKind] = BtfKind.UNKN
    name: str = ""


@dataclass
class Int:
    kind: ClassVar[BtfKind] = BtfKind.INT
    name: str
    size: int
    encoding: int = 0
    bits_offset: int = 0
    nr_bits: int = 0


@dataclass
class Ptr:
    kind: ClassVar[BtfKind] = BtfKind.PTR
    type: int
    name: str = ""


@dataclass
class Array:
    kind: ClassVar[BtfKind] = BtfKind.ARRAY
    type: int
    index_type: int
    nelems: int
    name: str = ""


@dataclass
class Member:
    name: str
    type: int
    bit_offset: int
    bitfield_size: int = 0


@dataclass
class Struct:
    kind: ClassVar[BtfKind] = BtfKind.STRUCT
    name: str
    size: int
    members: List[Member] = field(default_factory=list)


@dataclass
class Union:
    kind: ClassVar[BtfKind] = BtfKind.UNION
    name: str
    size: int
    members: List[Member] = field(default_factory=list)


@dataclass
class EnumValue:
    name: str
    value: int


@dataclass
class Enum:
    kind: ClassVar[BtfKind] = BtfKind.ENUM
    name: str
    size: int
    signed: bool = False
    values: List[EnumValue] = field(default_factory=list)


@dataclass
class Enum64:
    kind: ClassVar[BtfKind] = BtfKind.ENUM64
    name: str
    size: int
    signed: bool = False
    values: List[EnumValue] = field(default_factory=list)


@dataclass
class Fwd:
    kind: ClassVar[BtfKind] = BtfKind.FWD
    name: str
    is_union: bool = False


@dataclass
class Typedef:
    kind: ClassVar[BtfKind] = BtfKind.TYPEDEF
    name: str
    type: int


@dataclass
class Volatile:
    kind: ClassVar[BtfKind] = BtfKind.VOLATILE
    type: int
    name: str = ""


@dataclass
class Const:
    kind: ClassVar[BtfKind] = BtfKind.CONST
    type: int
    name: str = ""


@dataclass
class Restrict:
    kind: ClassVar[BtfKind] = BtfKind.RESTRICT
    type: int
    name: str = ""


@dataclass
class TypeTag:
    kind: ClassVar[BtfKind] = BtfKind.TYPE_TAG
    name: str
    type: int
    kflag: bool = False   # newer kernels: an attribute rather than a tag


@dataclass
class Func:
    kind: ClassVar[BtfKind] = BtfKind.FUNC
    name: str
    type: int
    linkage: int = 0      # 0 static, 1 global, 2 extern


@dataclass
class Param:
    name: str
    type: int


@dataclass
class FuncProto:
    kind: ClassVar[BtfKind] = BtfKind.FUNC_PROTO
    ret_type: int
    params: List[Param] = field(default_factory=list)
    name: str = ""


@dataclass
class Var:
    kind: ClassVar[BtfKind] = BtfKind.VAR
    name: str
    type: int
    linkage: int = 0


@dataclass
class VarSecInfo:
    type: int
    offset: int
    size: int


@dataclass
class Datasec:
    kind: ClassVar[BtfKind] = BtfKind.DATASEC
    name: str
    size: int
    vars: List[VarSecInfo] = field(default_factory=list)


@dataclass
class Float:
    kind: ClassVar[BtfKind] = BtfKind.FLOAT
    name: str
    size: int


@dataclass
class DeclTag:
    kind: ClassVar[BtfKind] = BtfKind.DECL_TAG
    name: str
    type: int
    component_idx: int = -1
    kflag: bool = False


BtfType = typing.Union[Void, Int, Ptr, Array, Struct, Union, Enum, Enum64, Fwd, Typedef, Volatile,
                Const, Restrict, TypeTag, Func, FuncProto, Var, Datasec, Float, DeclTag]

MODIFIERS = (BtfKind.TYPEDEF, BtfKind.VOLATILE, BtfKind.CONST, BtfKind.RESTRICT, BtfKind.TYPE_TAG)
