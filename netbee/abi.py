"""Python mirror of bpf/src/netbee_abi.h: the event record, rules, config and constants.

The construct layouts here are the single Python definition of the wire formats; decode.py derives
its fast struct.Struct path from EVENT's field offsets, and tests/unit/test_abi.py checks every
offset and size against the BTF of the built object (bpf/prebuilt/netbee.bpf.o).
"""
from __future__ import annotations

import sys
from enum import IntEnum
from typing import Dict, List, Tuple

from netbee.loader import deferred_imports

# construct imports modules netbee never uses (its debugger's): loaded on first use instead
deferred_imports.defer()

from construct import Array, Bytes, Int8un, Int16un, Int32un, Int64un, Padding, Struct  # noqa: E402

NB_COMM_LEN = 16
NB_MAX_RULES = 32
NB_MAX_STACK = 32
NB_NEST = 4


class NbHook(IntEnum):
    """enum nb_hook: where an event was seen."""
    NONE = 0
    NETIF_RX = 1
    NETIF_RECEIVE_SKB = 2
    IP_RCV = 3
    IP_LOCAL_DELIVER = 4
    IP_FORWARD = 5
    TCP_V4_RCV = 6
    UDP_RCV = 7
    ICMP_RCV = 8
    TCP_TRANSMIT_SKB = 9
    IP_QUEUE_XMIT = 10
    DEV_QUEUE_XMIT = 11
    NET_DEV_START_XMIT = 12
    NF_HOOK_SLOW = 13
    NF_BRACKET = 14
    KFREE_SKB = 15
    IPV6_RCV = 16
    IP6_INPUT = 17
    IP6_FORWARD = 18
    TCP_V6_RCV = 19
    UDPV6_RCV = 20
    ICMPV6_RCV = 21
    IP6_XMIT = 22
    IP_OUTPUT = 23
    IP6_OUTPUT = 24
    MAX = 25


class NbCounter(IntEnum):
    """enum nb_counter: index into the `counters` map and into each row of SCRATCH_HEAD.count."""
    FILTERED = 0
    SUBMITTED = 1
    LOST = 2
    MAX = 3


EVENT_COUNTERS = tuple(c for c in NbCounter if c is not NbCounter.MAX)


class RuleOp(IntEnum):
    """enum nb_rule_op."""
    TERM = 0
    AND = 1
    OR = 2
    NOT = 3
    REQUIRE = 4


class RuleField(IntEnum):
    """enum nb_rule_field."""
    TRUE = 0
    FAMILY = 1
    PROTO = 2
    SRC_NET = 3
    DST_NET = 4
    ANY_NET = 5
    SRC_PORT = 6
    DST_PORT = 7
    ANY_PORT = 8
    IFINDEX = 9
    NETNS = 10


# nb_event.flags
F_HAS_L2 = 0x0001
F_HAS_L3 = 0x0002
F_HAS_L4 = 0x0004
F_INNER = 0x0008
F_NF = 0x0010
F_DROP = 0x0020
F_STACK = 0x0040
F_TCP_STATE = 0x0080
F_NONLINEAR = 0x0100
F_FROM_SOCK = 0x0200

# nb_event.verdict
VERDICT_DROP = 0
VERDICT_ACCEPT = 1
VERDICT_STOLEN = 2
VERDICT_QUEUE = 3

# Native byte order throughout: the record is written by the kernel we run on.
EVENT = Struct(
    "ts_ns" / Int64un,
    "skb" / Int64un,
    "location" / Int64un,
    "netns" / Int32un,
    "ifindex" / Int32un,
    "pid" / Int32un,
    "drop_reason" / Int32un,
    "seq" / Int32un,
    "ack" / Int32un,
    "hook" / Int16un,
    "cpu" / Int16un,
    "flags" / Int16un,
    "ethertype" / Int16un,
    "ip_len" / Int16un,
    "skb_len" / Int16un,
    "sport" / Int16un,
    "dport" / Int16un,
    "window" / Int16un,
    "payload_len" / Int16un,
    "udp_len" / Int16un,
    "icmp_id" / Int16un,
    "icmp_seq" / Int16un,
    "inner_sport" / Int16un,
    "inner_dport" / Int16un,
    "stack_depth" / Int16un,
    "family" / Int8un,
    "ip_proto" / Int8un,
    "ttl" / Int8un,
    "tcp_flags" / Int8un,
    "tcp_state" / Int8un,
    "icmp_type" / Int8un,
    "icmp_code" / Int8un,
    "inner_proto" / Int8un,
    "nf_hook" / Int8un,
    "verdict" / Int8un,
    "smac" / Bytes(6),
    "dmac" / Bytes(6),
    "saddr" / Bytes(16),
    "daddr" / Bytes(16),
    "inner_saddr" / Bytes(16),
    "inner_daddr" / Bytes(16),
    "comm" / Bytes(NB_COMM_LEN),
    Padding(2),  # the struct's 8-byte alignment
)
EVENT_SIZE = 184
assert EVENT.sizeof() == EVENT_SIZE

RULE = Struct(
    "op" / Int8un,
    "field" / Int8un,
    "family" / Int8un,
    "pad" / Int8un,
    "lo" / Int16un,
    "hi" / Int16un,
    "value" / Int32un,
    "addr" / Bytes(16),
    "mask" / Bytes(16),
)
RULE_SIZE = 44
assert RULE.sizeof() == RULE_SIZE

CONFIG = Struct(
    "filter_len" / Int32un,
    "want_stack" / Int32un,
    "wakeup_bytes" / Int32un,
    "rules" / Array(NB_MAX_RULES, RULE),
)
CONFIG_SIZE = 12 + NB_MAX_RULES * RULE_SIZE
assert CONFIG.sizeof() == CONFIG_SIZE

DYN_FILTER = Struct(
    "filter_len" / Int32un,
    "rules" / Array(NB_MAX_RULES, RULE),
)
DYN_FILTER_SIZE = 4 + NB_MAX_RULES * RULE_SIZE
assert DYN_FILTER.sizeof() == DYN_FILTER_SIZE

# The start of the `scratch` map's per-CPU value: the event counts of each nesting level.
SCRATCH_HEAD = Struct(
    "depth" / Int32un,
    "pad" / Int32un,
    "count" / Array(NB_NEST, Array(NbCounter.MAX, Int64un)),
)


def count_events(shared: Dict[int, List[bytes]], scratch: List[bytes]) -> Dict[NbCounter, int]:
    """The kernel's event counts, summed over CPUs and nesting levels. shared: the `counters`
    map's per-CPU values by index (enum nb_counter), scratch: the `scratch` map's per-CPU values
    (key 0), of which only the head is read. Both hold part of each count (see netbee_abi.h)."""
    out = {}
    head = SCRATCH_HEAD.sizeof()
    rows = [SCRATCH_HEAD.parse(v[:head]).count for v in scratch]
    for c in EVENT_COUNTERS:
        n = sum(int.from_bytes(v[:8], sys.byteorder) for v in shared.get(c, []))
        out[c] = n + sum(level[c] for cpu in rows for level in cpu)
    return out


STACK_FRAME_SIZE = 8  # each __u64 return address following an event with F_STACK


def field_layout(layout: Struct) -> List[Tuple[str, int, int]]:
    """(name, offset, size) of every named field of a fixed-size construct Struct, in order."""
    out: List[Tuple[str, int, int]] = []
    offset = 0
    for sub in layout.subcons:
        size = sub.sizeof()
        if sub.name:
            out.append((sub.name, offset, size))
        offset += size
    return out


def event_offsets() -> Dict[str, Tuple[int, int]]:
    """name -> (offset, size) for EVENT."""
    return {name: (off, size) for name, off, size in field_layout(EVENT)}


def build_config(rules_blob: bytes = b"", rule_count: int = 0, *, want_stack: bool = False,
                 wakeup_bytes: int = 0) -> bytes:
    """struct nb_config bytes: rules_blob is rule_count RULE records (filter.encode_rules)."""
    if rule_count > NB_MAX_RULES or len(rules_blob) != rule_count * RULE_SIZE:
        raise ValueError(f"need at most {NB_MAX_RULES} rules of {RULE_SIZE} bytes, "
                         f"got {rule_count} rules in {len(rules_blob)} bytes")
    head = CONFIG.subcons[0].build(rule_count) + CONFIG.subcons[1].build(int(want_stack)) \
        + CONFIG.subcons[2].build(wakeup_bytes)
    return head + rules_blob + bytes(CONFIG_SIZE - len(head) - len(rules_blob))


def build_dyn_filter(rules_blob: bytes, rule_count: int) -> bytes:
    """struct nb_dyn_filter bytes: the rules of a dynamic program set (filter_dynamic)."""
    if rule_count > NB_MAX_RULES or len(rules_blob) != rule_count * RULE_SIZE:
        raise ValueError(f"need at most {NB_MAX_RULES} rules of {RULE_SIZE} bytes, "
                         f"got {rule_count} rules in {len(rules_blob)} bytes")
    head = DYN_FILTER.subcons[0].build(rule_count)
    return head + rules_blob + bytes(DYN_FILTER_SIZE - len(head) - len(rules_blob))
