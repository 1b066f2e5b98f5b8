"""Raw ring buffer record (struct nb_event + optional stack) -> Event.

Speed matters (the target is >= 200k events/s decoded and rendered on one core): the record is
unpacked with one precompiled struct.Struct derived from abi.EVENT (construct stays the single
definition; tests check both agree), and address/comm objects come from small caches since a
trace repeats the same few flows.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from operator import itemgetter
from typing import Dict, List, NamedTuple, Optional, Union

from netbee import abi
from netbee.hooks import FUNC_NAMES

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


class InnerFlow(NamedTuple):
    """The original datagram quoted by an ICMP/ICMPv6 error."""
    proto: int
    saddr: Optional[Address]
    daddr: Optional[Address]
    sport: Optional[int]
    dport: Optional[int]


@dataclass
class Event:
    """One decoded event; fields that the record does not carry are None (see contracts.txt)."""
    __slots__ = ("ts_ns", "skb", "hook", "func", "cpu", "pid", "comm", "netns", "ifindex", "family",
                 "proto", "saddr", "daddr", "sport", "dport", "ttl", "ip_len", "skb_len", "smac", "dmac",
                 "ethertype", "tcp_flags", "tcp_state", "seq", "ack", "window", "payload_len", "udp_len",
                 "icmp_type", "icmp_code", "icmp_id", "icmp_seq", "inner", "nf_hook", "verdict",
                 "drop_reason", "location", "stack", "flags")
    ts_ns: int
    skb: int
    hook: int
    func: str
    cpu: int
    pid: int
    comm: str
    netns: int
    ifindex: int
    family: int
    proto: Optional[int]
    saddr: Optional[Address]
    daddr: Optional[Address]
    sport: Optional[int]
    dport: Optional[int]
    ttl: Optional[int]
    ip_len: Optional[int]
    skb_len: int
    smac: Optional[bytes]
    dmac: Optional[bytes]
    ethertype: int
    tcp_flags: Optional[int]
    tcp_state: Optional[int]
    seq: Optional[int]
    ack: Optional[int]
    window: Optional[int]
    payload_len: Optional[int]
    udp_len: Optional[int]
    icmp_type: Optional[int]
    icmp_code: Optional[int]
    icmp_id: Optional[int]
    icmp_seq: Optional[int]
    inner: Optional[InnerFlow]
    nf_hook: Optional[int]
    verdict: Optional[int]
    drop_reason: Optional[int]
    location: Optional[int]
    stack: Optional[List[int]]
    flags: int


def struct_format(layout) -> str:
    """A native struct format equivalent to a fixed-size construct Struct of FormatFields, Bytes
    and Padding; the struct module's "=" mode adds no alignment of its own."""
    parts = ["="]
    for sub in layout.subcons:
        inner = getattr(sub, "subcon", sub)     # Renamed -> the field's construct
        fmt = getattr(inner, "fmtstr", None)
        if fmt is not None:
            parts.append(fmt.lstrip("<>=!@"))
        elif not sub.name:                      # Padding
            parts.append(f"{sub.sizeof()}x")
        else:                                   # Bytes(n)
            parts.append(f"{sub.sizeof()}s")
    return "".join(parts)


EVENT_STRUCT = struct.Struct(struct_format(abi.EVENT))
assert EVENT_STRUCT.size == abi.EVENT_SIZE
EVENT_FIELDS = tuple(name for name, _, _ in abi.field_layout(abi.EVENT))

_unpack = EVENT_STRUCT.unpack_from
_SIZE = abi.EVENT_SIZE
_HAS_L2, _HAS_L3, _HAS_L4 = abi.F_HAS_L2, abi.F_HAS_L3, abi.F_HAS_L4
_ADDRS = abi.F_HAS_L3 | abi.F_FROM_SOCK
_PORTS = abi.F_HAS_L4 | abi.F_FROM_SOCK
_F_INNER, _F_NF, _F_DROP, _F_STACK, _F_TCP_STATE = (abi.F_INNER, abi.F_NF, abi.F_DROP, abi.F_STACK,
                                                    abi.F_TCP_STATE)
_PORT_PROTOS = (6, 17, 132)
_ECHO = {4: (0, 8, 13, 14), 6: (128, 129)}

_CACHE_MAX = 4096
_v4: Dict[bytes, ipaddress.IPv4Address] = {}
_v6: Dict[bytes, ipaddress.IPv6Address] = {}
_comms: Dict[bytes, str] = {}


def _addr(family: int, raw: bytes) -> Optional[Address]:
    if family == 4:
        a = _v4.get(raw)
        if a is None:
            if len(_v4) >= _CACHE_MAX:
                _v4.clear()
            a = _v4[raw] = ipaddress.IPv4Address(raw[:4])
        return a
    if family == 6:
        a6 = _v6.get(raw)
        if a6 is None:
            if len(_v6) >= _CACHE_MAX:
                _v6.clear()
            a6 = _v6[raw] = ipaddress.IPv6Address(raw)
        return a6
    return None


def _comm(raw: bytes) -> str:
    s = _comms.get(raw)
    if s is None:
        if len(_comms) >= _CACHE_MAX:
            _comms.clear()
        s = _comms[raw] = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    return s


_EV_FIELDS = Event.__slots__
_RAW = {name: i for i, name in enumerate(EVENT_FIELDS)}
_NONE = len(EVENT_FIELDS)       # index of None in raw + _TAIL
_ZERO = _NONE + 1               # index of 0
_TAIL = (None, 0)
_plans: Dict[int, "itemgetter"] = {}


def _valid_fields(flags: int, proto: int, icmp_type: int) -> Dict[str, bool]:
    """Which Event fields a record with these flags/proto/ICMP type vouches for."""
    addrs = bool(flags & _ADDRS)
    p = proto if addrs else None
    l4 = bool(flags & _HAS_L4)
    tcp_hdr = p == 6 and l4
    icmp = p in (1, 58) and l4
    echo = icmp and icmp_type in _ECHO[4 if p == 1 else 6]
    ports = bool(flags & _PORTS) and p in _PORT_PROTOS
    return {
        "proto": addrs, "ttl": bool(flags & _HAS_L3), "ip_len": bool(flags & _HAS_L3),
        "smac": bool(flags & _HAS_L2), "dmac": bool(flags & _HAS_L2), "sport": ports, "dport": ports,
        "tcp_flags": tcp_hdr, "seq": tcp_hdr, "ack": tcp_hdr, "window": tcp_hdr,
        "payload_len": p == 6 and bool(flags & _PORTS), "udp_len": p == 17 and l4,
        "icmp_type": icmp, "icmp_code": icmp, "icmp_id": echo, "icmp_seq": echo,
        "tcp_state": bool(flags & _F_TCP_STATE), "nf_hook": bool(flags & _F_NF),
        "verdict": bool(flags & _F_NF), "drop_reason": bool(flags & _F_DROP),
        "location": bool(flags & _F_DROP),
    }


def _plan(key: int) -> "itemgetter":
    """An itemgetter picking Event's positional arguments out of raw + _TAIL for one kind of
    record: a field the record does not vouch for picks None (family picks 0). func, comm,
    addresses, inner and stack are filled in afterwards."""
    flags, proto, icmp_type = key & 0xFFFF, (key >> 16) & 0xFF, key >> 24
    valid = _valid_fields(flags, proto, icmp_type)
    idx = []
    for name in _EV_FIELDS:
        if name == "proto":
            idx.append(_RAW["ip_proto"] if valid["proto"] else _NONE)
        elif name == "family":
            idx.append(_RAW["family"] if flags & _ADDRS else _ZERO)
        elif name in ("func", "comm", "saddr", "daddr", "inner", "stack"):
            idx.append(_NONE)
        elif valid.get(name, True):
            idx.append(_RAW[name])
        else:
            idx.append(_NONE)
    getter = itemgetter(*idx)
    if len(_plans) >= _CACHE_MAX:
        _plans.clear()
    _plans[key] = getter
    return getter


HOOK_OFFSET, _HOOK_SIZE = abi.event_offsets()["hook"]
assert _HOOK_SIZE == 2
# A raw record's hook field as bytes (int.from_bytes(..., sys.byteorder)): a C itemgetter, so the
# tracer counts events per hook without decoding them.
HOOK_BYTES = itemgetter(slice(HOOK_OFFSET, HOOK_OFFSET + _HOOK_SIZE))


def func_name(hook: int) -> str:
    """Event.func of a hook id."""
    return FUNC_NAMES.get(hook) or f"hook#{hook}"


_I_HOOK, _I_FLAGS, _I_FAMILY, _I_PROTO, _I_ICMP_TYPE = (_RAW["hook"], _RAW["flags"], _RAW["family"],
                                                        _RAW["ip_proto"], _RAW["icmp_type"])
_I_SADDR, _I_DADDR, _I_COMM = _RAW["saddr"], _RAW["daddr"], _RAW["comm"]


def decode_event(buf: Union[bytes, bytearray, memoryview]) -> Event:
    """Decode one ring buffer record; raises ValueError when it is shorter than struct nb_event."""
    if len(buf) < _SIZE:
        raise ValueError(f"event record of {len(buf)} bytes, expected at least {_SIZE}")
    raw = _unpack(buf, 0)
    flags = raw[_I_FLAGS]
    key = flags | (raw[_I_PROTO] << 16) | (raw[_I_ICMP_TYPE] << 24)
    plan = _plans.get(key)
    if plan is None:
        plan = _plan(key)
    ev = Event(*plan(raw + _TAIL))
    hook = raw[_I_HOOK]
    ev.func = FUNC_NAMES.get(hook) or f"hook#{hook}"
    c = raw[_I_COMM]
    ev.comm = _comms.get(c) or _comm(c)
    family = raw[_I_FAMILY]
    if flags & _ADDRS and (family == 4 or family == 6):
        # (another family has no addresses: the v6 cache must not lend it one decoded earlier)
        cache = _v4 if family == 4 else _v6
        a = raw[_I_SADDR]
        ev.saddr = cache.get(a) or _addr(family, a)
        a = raw[_I_DADDR]
        ev.daddr = cache.get(a) or _addr(family, a)
    if flags & _F_INNER:
        ifam = 4 if raw[_I_PROTO] == 1 else 6
        iproto = raw[_RAW["inner_proto"]]
        has_ports = iproto in _PORT_PROTOS
        ev.inner = InnerFlow(iproto, _addr(ifam, raw[_RAW["inner_saddr"]]), _addr(ifam, raw[_RAW["inner_daddr"]]),
                             raw[_RAW["inner_sport"]] if has_ports else None,
                             raw[_RAW["inner_dport"]] if has_ports else None)
    if flags & _F_STACK:
        n = min(raw[_RAW["stack_depth"]], (len(buf) - _SIZE) // 8, abi.NB_MAX_STACK)
        ev.stack = list(struct.unpack_from(f"={n}Q", buf, _SIZE))
    return ev
