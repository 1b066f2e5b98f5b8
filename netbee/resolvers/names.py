"""Display names for protocol numbers, ICMP/ICMPv6 types and codes, TCP states and flags,
netfilter hooks and verdicts. These are wire/UAPI values that do not change between kernels
(unlike drop reasons, which come from BTF)."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

PROTOCOLS = {1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 47: "gre", 50: "esp", 51: "ah",
             58: "icmp6", 132: "sctp"}

ICMP4: Dict[int, Tuple[str, Dict[int, str]]] = {
    0: ("echo reply", {}),
    3: ("destination unreachable", {
        0: "net unreachable", 1: "host unreachable", 2: "protocol unreachable",
        3: "port unreachable", 4: "fragmentation needed", 5: "source route failed",
        6: "net unknown", 7: "host unknown", 8: "source host isolated", 9: "net prohibited",
        10: "host prohibited", 11: "net unreachable for TOS", 12: "host unreachable for TOS",
        13: "administratively prohibited", 14: "host precedence violation",
        15: "precedence cutoff"}),
    4: ("source quench", {}),
    5: ("redirect", {0: "net", 1: "host", 2: "TOS and net", 3: "TOS and host"}),
    8: ("echo request", {}),
    9: ("router advertisement", {}),
    10: ("router solicitation", {}),
    11: ("time exceeded", {0: "ttl exceeded in transit", 1: "fragment reassembly time exceeded"}),
    12: ("parameter problem", {0: "pointer indicates the error", 1: "missing option",
                               2: "bad length"}),
    13: ("timestamp request", {}),
    14: ("timestamp reply", {}),
}

ICMP6: Dict[int, Tuple[str, Dict[int, str]]] = {
    1: ("destination unreachable", {
        0: "no route", 1: "administratively prohibited", 2: "beyond scope of source address",
        3: "address unreachable", 4: "port unreachable", 5: "source address failed policy",
        6: "reject route"}),
    2: ("packet too big", {}),
    3: ("time exceeded", {0: "hop limit exceeded in transit", 1: "fragment reassembly time exceeded"}),
    4: ("parameter problem", {0: "erroneous header field", 1: "unrecognized next header",
                              2: "unrecognized option"}),
    128: ("echo request", {}),
    129: ("echo reply", {}),
    130: ("multicast listener query", {}),
    131: ("multicast listener report", {}),
    132: ("multicast listener done", {}),
    133: ("router solicitation", {}),
    134: ("router advertisement", {}),
    135: ("neighbor solicitation", {}),
    136: ("neighbor advertisement", {}),
    137: ("redirect", {}),
    143: ("multicast listener report v2", {}),
}

# include/net/tcp_states.h
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
              11: "CLOSING", 12: "NEW_SYN_RECV", 13: "BOUND_INACTIVE"}

NF_HOOKS = ("PRE_ROUTING", "LOCAL_IN", "FORWARD", "LOCAL_OUT", "POST_ROUTING")
VERDICTS = {0: "DROP", 1: "ACCEPT", 2: "STOLEN", 3: "QUEUE", 4: "REPEAT", 5: "STOP"}

# tcpdump's letters, in tcpdump's order; ACK is "." and printed last.
_TCP_LETTERS = ((0x02, "S"), (0x01, "F"), (0x08, "P"), (0x04, "R"), (0x20, "U"), (0x40, "E"),
                (0x80, "W"), (0x10, "."))
_FLAG_CACHE: Dict[int, str] = {}


def proto_name(proto: Optional[int]) -> Optional[str]:
    if proto is None:
        return None
    return PROTOCOLS.get(proto) or str(proto)


def tcp_flags(flags: int) -> str:
    """tcpdump style: SYN+ACK -> "S.", ACK -> ".", FIN+ACK -> "F.", none -> "none"."""
    text = _FLAG_CACHE.get(flags)
    if text is None:
        text = "".join(ch for bit, ch in _TCP_LETTERS if flags & bit) or "none"
        _FLAG_CACHE[flags] = text
    return text


def icmp(family: int, typ: int, code: int) -> Tuple[str, Optional[str]]:
    """(type name, code name or None when the type has no named codes); unknown -> numbers."""
    table = ICMP6 if family == 6 else ICMP4
    entry = table.get(typ)
    if entry is None:
        return f"type {typ}", f"code {code}" if code else None
    name, codes = entry
    if not codes:
        return name, (f"code {code}" if code else None)
    return name, codes.get(code, f"code {code}")


def tcp_state(state: Optional[int]) -> Optional[str]:
    if state is None:
        return None
    return TCP_STATES.get(state, str(state))


def nf_hook(hook: Optional[int]) -> Optional[str]:
    if hook is None:
        return None
    return NF_HOOKS[hook] if 0 <= hook < len(NF_HOOKS) else str(hook)


def verdict(value: Optional[int]) -> Optional[str]:
    if value is None:
        return None
    return VERDICTS.get(value, str(value))
