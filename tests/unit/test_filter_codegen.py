"""netbee/filter_codegen.py: the generated BPF run by a small interpreter written here (only
the instructions the generator may emit, with the checks the verifier would make), on random
events and random rule programs, against two references:

- c_filter below: nb_filter_match / nb_term of bpf/src/nb_filter.h transcribed, for arbitrary
  events (any flags) and arbitrary rules (any masks, families, ranges);
- netbee.filter.rules_match, the Python semantics of the filter language, for events whose
  flags agree with their fields (as the kernel builds them) and rules as compile_filter makes them.
"""
from __future__ import annotations

import ipaddress
import struct
import sys
from typing import Dict, List, Optional, Sequence

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from netbee import abi
from netbee.filter import (F_ANY_NET, F_ANY_PORT, F_DST_NET, F_DST_PORT, F_FAMILY, F_IFINDEX,
                           F_NETNS, F_PROTO, F_SRC_NET, F_SRC_PORT, F_TRUE, NB_MAX_RULES, OP_AND,
                           OP_NOT, OP_OR, OP_REQUIRE, OP_TERM, Rule, compile_filter, rules_match)
from netbee.filter_codegen import compile_rules, rules_tree
from netbee.loader import insn as I
from netbee.loader.errors import FilterError

OFF = abi.event_offsets()
ALL_FIELDS = [F_TRUE, F_FAMILY, F_PROTO, F_SRC_NET, F_DST_NET, F_ANY_NET, F_SRC_PORT, F_DST_PORT,
              F_ANY_PORT, F_IFINDEX, F_NETNS]


# ---------------------------------------------------------------- the BPF interpreter

class Rejected(AssertionError):
    """The code does something the generator must never emit (or the verifier would refuse)."""


_SIZES = {I.BPF_B: 1, I.BPF_H: 2, I.BPF_W: 4}
_JMP = {0x10: lambda a, b: a == b, 0x50: lambda a, b: a != b, 0x20: lambda a, b: a > b,
        0x30: lambda a, b: a >= b, 0xA0: lambda a, b: a < b, 0xB0: lambda a, b: a <= b}


def check_cfg(code: bytes) -> None:
    """What the verifier's CFG pass demands: forward jumps inside the body, every instruction
    reachable, no fall-through off the end."""
    n = I.count(code)
    if not n:
        raise Rejected("empty body")
    seen, todo = set(), [0]
    while todo:
        pc = todo.pop()
        if pc in seen:
            continue
        if not 0 <= pc < n:
            raise Rejected(f"control leaves the body at {pc}")
        seen.add(pc)
        ins = I.decode(code, pc)
        if ins.opcode == I.OP_EXIT:
            continue
        cls = ins.cls
        if cls in (I.BPF_JMP, I.BPF_JMP32):
            if ins.off < 0:
                raise Rejected(f"backward jump at {pc}")
            todo.append(pc + 1 + ins.off)
            if ins.opcode == I.BPF_JMP | I.BPF_JA:
                continue
        todo.append(pc + 1)
    if len(seen) != n:
        raise Rejected(f"unreachable instructions {sorted(set(range(n)) - seen)}")


def run_bpf(code: bytes, event: bytes) -> int:
    """Execute a generated body with r1 = the event; return r0."""
    regs: Dict[int, int] = {1: 0}     # r1: offset 0 into the event; nothing else initialised
    pc, steps, n = 0, 0, I.count(code)

    def read(r: int) -> int:
        if r not in regs:
            raise Rejected(f"r{r} read before it was written (insn {pc})")
        return regs[r]

    while True:
        if not 0 <= pc < n:
            raise Rejected(f"pc {pc} outside the body")
        steps += 1
        if steps > n:
            raise Rejected("more steps than instructions: a loop")
        ins = I.decode(code, pc)
        op, cls = ins.opcode, ins.cls
        if ins.dst in (1, 10) and cls not in (I.BPF_JMP, I.BPF_JMP32):
            raise Rejected(f"writes r{ins.dst} (insn {pc})")
        if cls == I.BPF_LDX and op & 0xE0 == I.BPF_MEM and op & 0x18 in _SIZES:
            size = _SIZES[op & 0x18]
            if ins.src != 1 or read(1) != 0:
                raise Rejected(f"load not from the event pointer (insn {pc})")
            # unaligned is fine (saddr sits at 102): the verifier allows it on map values where
            # the architecture loads unaligned words efficiently (x86, the object's target)
            if ins.off < 0 or ins.off + size > abi.EVENT_SIZE:
                raise Rejected(f"load of {size} at {ins.off} is outside the event")
            regs[ins.dst] = int.from_bytes(event[ins.off:ins.off + size], sys.byteorder)
        elif op == I.BPF_ALU | 0x50 | I.BPF_K:       # w &= imm
            regs[ins.dst] = read(ins.dst) & (ins.imm & 0xFFFFFFFF)
        elif op == I.BPF_ALU64 | I.BPF_MOV | I.BPF_K:
            regs[ins.dst] = ins.imm & 0xFFFFFFFFFFFFFFFF
        elif cls == I.BPF_JMP32 and op & 0x08 == I.BPF_K and op & 0xF0 in _JMP:
            if _JMP[op & 0xF0](read(ins.dst) & 0xFFFFFFFF, ins.imm & 0xFFFFFFFF):
                pc += ins.off
        elif op == I.BPF_JMP | I.BPF_JA:
            pc += ins.off
        elif op == I.OP_EXIT:
            return read(0)
        else:
            raise Rejected(f"instruction the generator must not emit: {ins}")
        pc += 1


# ---------------------------------------------------------------- references

def c_filter(rules: Sequence[Rule], ev: dict) -> bool:
    """nb_filter_match, line by line (u32 bit stack, REQUIRE's early exit)."""
    flags, proto = ev["flags"], ev["ip_proto"]
    has_addr = bool(flags & (abi.F_HAS_L3 | abi.F_FROM_SOCK))
    has_ports = has_addr and bool(flags & (abi.F_HAS_L4 | abi.F_FROM_SOCK)) and proto in (6, 17, 132)

    def word(b: bytes, j: int) -> int:
        return struct.unpack_from("=I", b, 4 * j)[0]

    def net(r: Rule, a: bytes) -> bool:
        if r.family != ev["family"]:
            return False
        if (word(a, 0) ^ word(r.addr, 0)) & word(r.mask, 0):
            return False
        if ev["family"] == 4:
            return True
        return all(not ((word(a, j) ^ word(r.addr, j)) & word(r.mask, j)) for j in (1, 2, 3))

    def port(r: Rule, p: int) -> bool:
        return r.lo <= p <= r.hi

    def term(r: Rule) -> bool:
        f = r.field
        if f == F_TRUE:
            return True
        if f == F_FAMILY:
            return has_addr and ev["family"] == r.lo
        if f == F_PROTO:
            return has_addr and proto == r.lo
        if f == F_SRC_NET:
            return has_addr and net(r, ev["saddr"])
        if f == F_DST_NET:
            return has_addr and net(r, ev["daddr"])
        if f == F_ANY_NET:
            return has_addr and (net(r, ev["saddr"]) or net(r, ev["daddr"]))
        if f == F_SRC_PORT:
            return has_ports and port(r, ev["sport"])
        if f == F_DST_PORT:
            return has_ports and port(r, ev["dport"])
        if f == F_ANY_PORT:
            return has_ports and (port(r, ev["sport"]) or port(r, ev["dport"]))
        if f == F_IFINDEX:
            return ev["ifindex"] == r.value
        if f == F_NETNS:
            return ev["netns"] == r.value
        return False

    if not rules:
        return True
    stack = 0
    for r in rules:
        if r.op == OP_TERM:
            stack = ((stack << 1) | term(r)) & 0xFFFFFFFF
        elif r.op == OP_NOT:
            stack ^= 1
        elif r.op == OP_REQUIRE:
            if not stack & 1:
                return False
            stack >>= 1
        else:
            b, a = stack & 1, (stack >> 1) & 1
            stack = ((stack >> 1) & ~1) | ((a & b) if r.op == OP_AND else (a | b))
    return bool(stack & 1)


def event_bytes(ev: dict) -> bytes:
    full = dict.fromkeys((name for name, _o, _s in abi.field_layout(abi.EVENT)), 0)
    for k in ("smac", "dmac"):
        full[k] = bytes(6)
    for k in ("inner_saddr", "inner_daddr", "comm"):
        full[k] = bytes(16)
    full.update(ev)
    return abi.EVENT.build(full)


def generated(rules: Sequence[Rule], ev: dict) -> bool:
    code = compile_rules(rules)
    check_cfg(code)
    r0 = run_bpf(code, event_bytes(ev))
    assert r0 in (0, 1)
    return bool(r0)


# ---------------------------------------------------------------- strategies

ADDRS4 = [ipaddress.ip_address(a) for a in ("10.200.1.1", "10.200.1.2", "10.200.2.9", "192.168.0.1")]
ADDRS6 = [ipaddress.ip_address(a) for a in ("fd00:200::1", "fd00:200::2", "fd00:201::1", "::1")]
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
# the combinations nb_filter_match tells apart, and anything else
FLAGS = st.sampled_from([0, abi.F_HAS_L3, abi.F_HAS_L3 | abi.F_HAS_L4, abi.F_FROM_SOCK, abi.F_HAS_L4,
                         abi.F_HAS_L2 | abi.F_HAS_L3]) | st.integers(0, 0x3FF)
small_ports = st.sampled_from([0, 4, 6, 17, 53, 80, 132, 443, 1000, 5201, 65535]) | u16


@st.composite
def any_event(draw) -> dict:
    """Any bit pattern the record can hold: flags and fields need not agree."""
    fam = draw(st.sampled_from([0, 4, 6]) | st.integers(0, 255))
    pool = ADDRS4 if fam == 4 else ADDRS6
    addr = st.sampled_from([a.packed.ljust(16, b"\0") for a in pool]) | st.binary(min_size=16, max_size=16)
    return dict(flags=draw(FLAGS), family=fam,
                ip_proto=draw(st.sampled_from([1, 6, 17, 58, 132]) | st.integers(0, 255)),
                saddr=draw(addr), daddr=draw(addr), sport=draw(small_ports), dport=draw(small_ports),
                ifindex=draw(st.sampled_from([1, 2, 7]) | u32), netns=draw(st.sampled_from([7, 4026531840]) | u32))


@st.composite
def any_term(draw) -> Rule:
    """Any nb_rule of op TERM, fields out of range included."""
    field = draw(st.sampled_from(ALL_FIELDS + [11, 255]))
    return Rule(OP_TERM, field, family=draw(st.sampled_from([4, 6]) | st.integers(0, 255)),
                lo=draw(small_ports), hi=draw(small_ports), value=draw(st.sampled_from([2, 7]) | u32),
                addr=draw(st.binary(min_size=16, max_size=16)), mask=draw(st.binary(min_size=16, max_size=16)))


def postfix(tree) -> List[Rule]:
    if isinstance(tree, Rule):
        return [tree]
    op, kids = tree
    return [r for k in kids for r in postfix(k)] + [Rule(op)]


def trees(leaves):
    return st.recursive(leaves, lambda kids: st.one_of(
        st.tuples(st.just(OP_NOT), st.tuples(kids)),
        st.tuples(st.sampled_from([OP_AND, OP_OR]), st.tuples(kids, kids))), max_leaves=10)


@st.composite
def programs(draw, leaves) -> List[Rule]:
    """Conjuncts joined the way compile_filter joins them (c1 REQUIRE c2 REQUIRE ... ck), or one
    tree; at most NB_MAX_RULES entries."""
    conj = draw(st.lists(trees(leaves), min_size=1, max_size=4))
    out: List[Rule] = []
    for i, c in enumerate(conj):
        part = postfix(c) + ([Rule(OP_REQUIRE)] if i < len(conj) - 1 else [])
        if len(out) + len(part) > NB_MAX_RULES:
            break
        out += part
    if out and out[-1].op == OP_REQUIRE:
        out.pop()
    return out or postfix(conj[0])[:1]


# rules as compile_filter writes them: v4 masks cover only the first word, ranges lo <= hi
@st.composite
def filter_term(draw) -> Rule:
    kind = draw(st.sampled_from(["host", "net", "port", "proto", "family", "ifindex", "netns", "true"]))
    if kind in ("host", "net"):
        addr = draw(st.sampled_from(ADDRS4 + ADDRS6))
        plen = addr.max_prefixlen if kind == "host" else draw(st.integers(0, addr.max_prefixlen))
        net = ipaddress.ip_network(f"{addr}/{plen}", strict=False)
        field = draw(st.sampled_from([F_SRC_NET, F_DST_NET, F_ANY_NET]))
        return Rule(OP_TERM, field, family=net.version, addr=net.network_address.packed.ljust(16, b"\0"),
                    mask=net.netmask.packed.ljust(16, b"\0"))
    if kind == "port":
        lo = draw(small_ports)
        hi = draw(st.just(lo) | st.integers(lo, 0xFFFF))
        return Rule(OP_TERM, draw(st.sampled_from([F_SRC_PORT, F_DST_PORT, F_ANY_PORT])), lo=lo, hi=hi)
    if kind == "proto":
        p = draw(st.sampled_from([1, 6, 17, 58, 132]))
        return Rule(OP_TERM, F_PROTO, lo=p, hi=p)
    if kind == "family":
        f = draw(st.sampled_from([4, 6]))
        return Rule(OP_TERM, F_FAMILY, lo=f, hi=f)
    if kind == "ifindex":
        return Rule(OP_TERM, F_IFINDEX, value=draw(st.sampled_from([1, 2, 7, 0xFFFFFFFF])))
    if kind == "netns":
        return Rule(OP_TERM, F_NETNS, value=draw(st.sampled_from([7, 4026531840])))
    return Rule(OP_TERM, F_TRUE)


@st.composite
def real_packet(draw):
    """(event dict, rules_match fields) of a packet as the kernel records it: HAS_L3 (or
    FROM_SOCK) iff there are addresses, HAS_L4 iff there are ports."""
    fam = draw(st.sampled_from([0, 4, 6]))
    ifindex, netns = draw(st.sampled_from([1, 2, 7])), draw(st.sampled_from([7, 4026531840]))
    ev = dict(family=fam, ifindex=ifindex, netns=netns, flags=draw(st.sampled_from([0, abi.F_HAS_L2])))
    fields = dict(family=fam, ifindex=ifindex, netns=netns, proto=None, saddr=None, daddr=None,
                  sport=None, dport=None)
    if fam:
        pool = ADDRS4 if fam == 4 else ADDRS6
        s, d = draw(st.sampled_from(pool)), draw(st.sampled_from(pool))
        proto = draw(st.sampled_from([1, 6, 17, 58, 132, 47]))
        ev.update(ip_proto=proto, saddr=s.packed.ljust(16, b"\0"), daddr=d.packed.ljust(16, b"\0"))
        ev["flags"] |= draw(st.sampled_from([abi.F_HAS_L3, abi.F_FROM_SOCK]))
        fields.update(proto=proto, saddr=s, daddr=d)
        # a non-first fragment has no ports; a socket always has them (0 when unbound or
        # unconnected), with or without a transport header read
        from_sock = bool(ev["flags"] & abi.F_FROM_SOCK)
        if proto in (6, 17, 132) and (from_sock or draw(st.booleans())):
            sp, dp = draw(small_ports), draw(small_ports)
            ev.update(sport=sp, dport=dp)
            if not from_sock:
                ev["flags"] |= abi.F_HAS_L4
            fields.update(sport=sp, dport=dp)
    return ev, fields


# ---------------------------------------------------------------- tests

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(any_term()), st.lists(any_event(), min_size=1, max_size=6))
def test_generated_code_equals_the_c_interpreter(rules, events):
    for ev in events:
        assert generated(rules, ev) == c_filter(rules, ev), (rules, ev)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(filter_term()), st.lists(real_packet(), min_size=1, max_size=6))
def test_generated_code_equals_rules_match(rules, packets):
    for ev, fields in packets:
        assert generated(rules, ev) == rules_match(rules, fields), (rules, ev)


@st.composite
def near_event(draw, rule: Rule) -> dict:
    """An event on the edges of a rule: ports at and next to lo/hi, the rule's address with a
    bit or two flipped, its family, value and protocol most of the time."""
    def edge(v: int) -> int:
        return draw(st.sampled_from([v, max(v - 1, 0), min(v + 1, 0xFFFF)]))

    def addr() -> bytes:
        a = bytearray(rule.addr)
        for _ in range(draw(st.integers(0, 2))):
            a[draw(st.integers(0, 15))] ^= 1 << draw(st.integers(0, 7))
        return bytes(a)

    port = st.builds(edge, st.sampled_from([rule.lo, rule.hi]))
    return dict(flags=draw(FLAGS), family=draw(st.sampled_from([rule.family, rule.lo & 0xFF, 4, 6])),
                ip_proto=draw(st.sampled_from([rule.lo & 0xFF, 6, 17, 132, 1])), saddr=addr(), daddr=addr(),
                sport=draw(port), dport=draw(port), ifindex=draw(st.sampled_from([rule.value, 1])),
                netns=draw(st.sampled_from([rule.value, 7])))


@settings(max_examples=500, deadline=None)
@given(any_term(), st.data())
def test_every_term_alone_and_negated(rule, data):
    events = data.draw(st.lists(near_event(rule) | any_event(), min_size=1, max_size=8))
    for ev in events:
        want = c_filter([rule], ev)
        assert generated([rule], ev) == want
        assert generated([rule, Rule(OP_NOT)], ev) == (not want)


def _packet(family=4, proto=6, s="10.200.1.1", d="10.200.1.2", sport=1000, dport=80, flags=None,
            ifindex=2, netns=7) -> dict:
    if flags is None:
        flags = abi.F_HAS_L3 | abi.F_HAS_L4
    ev = dict(family=family, ip_proto=proto, sport=sport, dport=dport, flags=flags, ifindex=ifindex,
              netns=netns)
    if family:
        ev.update(saddr=ipaddress.ip_address(s).packed.ljust(16, b"\0"),
                  daddr=ipaddress.ip_address(d).packed.ljust(16, b"\0"))
    return ev


@pytest.mark.parametrize("expr,ev,expected", [
    ("host 10.200.1.2", _packet(), True),
    ("src host 10.200.1.2", _packet(), False),
    ("dst net 10.200.0.0/16", _packet(), True),
    ("host fd00:200::2", _packet(6, s="fd00:200::1", d="fd00:200::2"), True),
    ("host fd00:200::3", _packet(6, s="fd00:200::1", d="fd00:200::2"), False),
    # the same first word, another family: the family decides
    ("net 10.200.0.0/16", _packet(6, s="a00:c801::1", d="fd00::1"), False),
    ("port 80", _packet(), True),
    ("port 80", _packet(proto=1), False),                       # ICMP has no ports
    ("port 80", _packet(flags=abi.F_HAS_L3), False),            # no transport header read
    ("port 80", _packet(flags=abi.F_FROM_SOCK), True),          # from the socket: ports valid
    ("portrange 70-90 and not port 85", _packet(), True),
    ("src portrange 1001-2000", _packet(), False),
    ("tcp and ip6", _packet(), False),
    ("ip and (udp or tcp)", _packet(), True),
    ("ip", _packet(flags=0), False),                            # no L3: family terms are false
    ("not ip", _packet(flags=0), True),
])
def test_known_cases(expr, ev, expected):
    rules = compile_filter(expr)
    assert generated(rules, ev) is expected
    assert c_filter(rules, ev) is expected


def test_options_ifindex_netns_and_empty():
    ev = _packet(ifindex=7, netns=4026531840)
    assert generated([], ev) and compile_rules([]) == I.mov64_imm(0, 1) + I.exit_insn()
    assert generated(compile_filter(None, ifindexes=[3, 7], netns_inodes=[4026531840]), ev)
    assert not generated(compile_filter("tcp", ifindexes=[3], netns_inodes=[4026531840]), ev)
    assert not generated(compile_filter("tcp", netns_inodes=[1]), ev)
    # a u32 with the top bit set compares as a u32, not as a sign-extended immediate
    assert generated(compile_filter(None, ifindexes=[0xFFFFFFF0]), _packet(ifindex=0xFFFFFFF0))


def test_offsets_come_from_the_event_layout():
    """Each term loads exactly its fields, at abi.EVENT's offsets."""
    fields = {
        F_IFINDEX: {"ifindex"}, F_NETNS: {"netns"}, F_FAMILY: {"flags", "family"},
        F_PROTO: {"flags", "ip_proto"}, F_SRC_NET: {"flags", "family", "saddr"},
        F_DST_NET: {"flags", "family", "daddr"}, F_ANY_NET: {"flags", "family", "saddr", "daddr"},
        F_SRC_PORT: {"flags", "ip_proto", "sport"}, F_DST_PORT: {"flags", "ip_proto", "dport"},
        F_ANY_PORT: {"flags", "ip_proto", "sport", "dport"},
    }
    where = {}
    for name, (off, size) in OFF.items():
        for b in range(off, off + size):
            where[b] = name
    for field, want in fields.items():
        rule = Rule(OP_TERM, field, family=6, lo=10, hi=20, value=3, addr=b"\x01" * 16, mask=b"\xff" * 16)
        code = compile_rules([rule])
        loads = {where[ins.off] for _i, ins in I.iter_insns(code) if ins.cls == I.BPF_LDX}
        assert loads == want, field


def test_v4_net_reads_one_word_v6_four():
    def words(rule):
        code = compile_rules([rule])
        return sorted(ins.off - OFF["saddr"][0] for _i, ins in I.iter_insns(code)
                      if ins.cls == I.BPF_LDX and OFF["saddr"][0] <= ins.off < OFF["saddr"][0] + 16)
    v4 = compile_filter("src host 10.200.1.1")[0]
    v6 = compile_filter("src host fd00:200::1")[0]
    assert words(v4) == [0] and words(v6) == [0, 4, 8, 12]
    # a /0 compares no word at all; a /40 two (the rest of the mask is zero)
    assert words(compile_filter("src net ::/0")[0]) == []
    assert words(compile_filter("src net fd00:200::/40")[0]) == [0, 4]


def test_worst_case_size_and_jumps():
    """32 rules of the most expensive kind stay small: jump offsets nowhere near 16 bits."""
    rule = Rule(OP_TERM, F_ANY_NET, family=6, addr=b"\x12" * 16, mask=b"\xf0" * 16)
    rules = [rule] + [r for _ in range(15) for r in (rule, Rule(OP_OR))] + [Rule(OP_NOT)]
    assert len(rules) == NB_MAX_RULES
    code = compile_rules(rules)
    assert I.count(code) < 1000
    assert max(abs(ins.off) for _i, ins in I.iter_insns(code)) < 1000
    check_cfg(code)


def test_malformed_programs_are_refused():
    t = Rule(OP_TERM, F_TRUE)
    for rules in ([Rule(OP_AND)], [t, Rule(OP_OR)], [Rule(OP_NOT)], [Rule(OP_REQUIRE)], [t, Rule(9)]):
        with pytest.raises(FilterError, match="malformed"):
            rules_tree(rules)
    with pytest.raises(FilterError, match="at most 32"):
        compile_rules([t] * 33)


def test_interpreter_quirks_kept():
    """Programs compile_filter never writes still get the C interpreter's answer: a value
    left below the top is ignored, and nothing left on the stack is false."""
    t, f = Rule(OP_TERM, F_TRUE), Rule(OP_TERM, F_NETNS, value=1)
    ev = _packet(netns=7)
    for rules in ([f, t], [t, f], [t, Rule(OP_REQUIRE)], [f, t, Rule(OP_REQUIRE)], [t, t, Rule(OP_REQUIRE)]):
        assert generated(rules, ev) == c_filter(rules, ev)
    assert generated([t, Rule(OP_REQUIRE)], ev) is False


def test_the_bpf_interpreter_rejects_what_it_must():
    """The checks above can fail: the test interpreter refuses unsafe or unknown code."""
    with pytest.raises(Rejected, match="before it was written"):
        run_bpf(I.exit_insn(), event_bytes({}))
    with pytest.raises(Rejected, match="unreachable"):
        check_cfg(I.mov64_imm(0, 1) + I.exit_insn() + I.exit_insn())
    with pytest.raises(Rejected, match="outside the event"):
        run_bpf(I.Insn(I.BPF_LDX | I.BPF_MEM | I.BPF_W, 2, 1, abi.EVENT_SIZE).encode() + I.exit_insn(),
                event_bytes({}))
    with pytest.raises(Rejected, match="must not emit"):
        run_bpf(I.call_helper(5) + I.exit_insn(), event_bytes({}))
