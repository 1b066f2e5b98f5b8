"""The filter rules compiled to BPF instructions: the body the loader puts in place of
nb_filter_run (bpf/src/nb_filter.h), so the kernel runs straight-line code instead of the
postfix interpreter over cfg.rules.

The generated function reads only r1 (the event, a pointer into the per-CPU scratch map
value), uses r2 as its one scratch register and returns r0 = 1 (keep) or 0 (drop). The
postfix program is rebuilt as an expression tree and emitted as short-circuit jumps; each
term becomes a few tests of event fields whose offsets come from netbee.abi.EVENT. The result
is exactly nb_filter_match's, including its has_addr / has_ports conditions.
"""
from __future__ import annotations

import sys
from typing import Dict, List, Optional, Sequence, Tuple, Union

from netbee import abi
from netbee.filter import (F_ANY_NET, F_ANY_PORT, F_DST_NET, F_DST_PORT, F_FAMILY, F_IFINDEX,
                           F_NETNS, F_PROTO, F_SRC_NET, F_SRC_PORT, F_TRUE, NB_MAX_RULES,
                           OP_AND, OP_NOT, OP_OR, OP_REQUIRE, OP_TERM, PORT_PROTOS, Rule)
from netbee.loader import insn as I
from netbee.loader.errors import FilterError
from netbee.loader.record import FrozenRecord, Record

# The name of the function in the object whose body this module provides.
FUNCTION = "nb_filter_run"

R0, R_EV, R_TMP = 0, 1, 2

JEQ, JGT, JGE, JNE, JLT, JLE = I.BPF_JEQ, I.BPF_JGT, I.BPF_JGE, I.BPF_JNE, I.BPF_JLT, I.BPF_JLE
NEGATE = {JEQ: JNE, JNE: JEQ, JGT: JLE, JLE: JGT, JGE: JLT, JLT: JGE}
_LOAD_SIZE = {1: I.BPF_B, 2: I.BPF_H, 4: I.BPF_W}

_OFFSETS: Dict[str, Tuple[int, int]] = abi.event_offsets()


# ---------------------------------------------------------------- expression tree

class Test(FrozenRecord):
    """(u32 of the event field at `field`+`delta`, ANDed with `mask` if set) `op` `imm`,
    unsigned 32-bit. Every field the filter reads fits in 32 bits."""
    __slots__ = ("field", "op", "imm", "mask", "delta", "size")

    def __init__(self, field: str,
                 op: int, imm: int, mask: Optional[int] = None, delta: int = 0, size: int = 0) -> None:
        self.field = field
        self.op = op
        self.imm = imm
        self.mask = mask
        self.delta = delta   # byte offset inside the field (address words)
        self.size = size   # bytes to load; 0: the field's size


class Const(FrozenRecord):
    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value


class Not(FrozenRecord):
    __slots__ = ("kid",)

    def __init__(self, kid: "Node") -> None:
        self.kid = kid


class And(FrozenRecord):
    __slots__ = ("kids",)

    def __init__(self, kids: Tuple["Node", ...]) -> None:
        self.kids = kids


class Or(FrozenRecord):
    __slots__ = ("kids",)

    def __init__(self, kids: Tuple["Node", ...]) -> None:
        self.kids = kids


Node = Union[Test, Const, Not, And, Or]
TRUE, FALSE = Const(True), Const(False)


def _junction(kind: type, unit: Const, absorbing: Const, kids: tuple) -> Node:
    """And/Or of kids, flattened, with constants folded: no constant stays inside a tree (the
    verifier refuses code that cannot be reached, which a constant branch would leave behind)."""
    out: List[Node] = []
    for k in kids:
        if k == absorbing:
            return absorbing
        if k != unit:
            out.extend(k.kids if isinstance(k, kind) else (k,))
    return unit if not out else out[0] if len(out) == 1 else kind(tuple(out))


def all_of(*kids: Node) -> Node:
    return _junction(And, TRUE, FALSE, kids)


def any_of(*kids: Node) -> Node:
    return _junction(Or, FALSE, TRUE, kids)


def negate(kid: Node) -> Node:
    if isinstance(kid, Const):
        return Const(not kid.value)
    if isinstance(kid, Not):
        return kid.kid
    if isinstance(kid, Test):
        return Test(kid.field, NEGATE[kid.op], kid.imm, kid.mask, kid.delta, kid.size)
    return Not(kid)


# ---------------------------------------------------------------- terms (nb_term)

_HAS_ADDR = Test("flags", JNE, 0, mask=abi.F_HAS_L3 | abi.F_FROM_SOCK)
_HAS_PORTS = all_of(_HAS_ADDR, Test("flags", JNE, 0, mask=abi.F_HAS_L4 | abi.F_FROM_SOCK),
                    any_of(*(Test("ip_proto", JEQ, p) for p in PORT_PROTOS)))


def _word(data: bytes, j: int) -> int:
    # the C code compares __u32 loads of both byte arrays: native order, like the event record
    return int.from_bytes(data[4 * j:4 * j + 4], sys.byteorder)


def _net(rule: Rule, side: str) -> Node:
    """nb_net_match without its family test: the address words under the rule's mask."""
    words = 1 if rule.family == 4 else 4
    tests: List[Node] = []
    for j in range(words):
        mask, addr = _word(rule.mask, j), _word(rule.addr, j)
        if mask == 0:
            continue          # (a ^ x) & 0 == 0 always
        # (a ^ x) & m == 0  <=>  (a & m) == (x & m). The word is one u32 load although the
        # addresses are only 2-byte aligned in the record: the verifier does not demand
        # alignment for map values where unaligned loads are cheap (x86, the object's target)
        tests.append(Test(side, JEQ, addr & mask, None if mask == 0xFFFFFFFF else mask,
                          delta=4 * j, size=4))
    return all_of(*tests)


def _ports(rule: Rule, side: str) -> Node:
    lo, hi = rule.lo & 0xFFFF, rule.hi & 0xFFFF
    if lo == hi:
        return Test(side, JEQ, lo)
    return all_of(Test(side, JGE, lo) if lo else TRUE, Test(side, JLE, hi) if hi != 0xFFFF else TRUE)


def term(rule: Rule) -> Node:
    """One TERM rule as a tree of tests: nb_term's semantics, field by field."""
    f = rule.field
    if f == F_TRUE:
        return TRUE
    if f == F_FAMILY:
        return all_of(_HAS_ADDR, Test("family", JEQ, rule.lo & 0xFFFF))
    if f == F_PROTO:
        return all_of(_HAS_ADDR, Test("ip_proto", JEQ, rule.lo & 0xFFFF))
    if f in (F_SRC_NET, F_DST_NET, F_ANY_NET):
        sides = {F_SRC_NET: ("saddr",), F_DST_NET: ("daddr",), F_ANY_NET: ("saddr", "daddr")}[f]
        # the family test is common to both sides of "any", so it is made once
        return all_of(_HAS_ADDR, Test("family", JEQ, rule.family & 0xFF),
                      any_of(*(_net(rule, s) for s in sides)))
    if f in (F_SRC_PORT, F_DST_PORT, F_ANY_PORT):
        sides = {F_SRC_PORT: ("sport",), F_DST_PORT: ("dport",), F_ANY_PORT: ("sport", "dport")}[f]
        return all_of(_HAS_PORTS, any_of(*(_ports(rule, s) for s in sides)))
    if f == F_IFINDEX:
        return Test("ifindex", JEQ, rule.value & 0xFFFFFFFF)
    if f == F_NETNS:
        return Test("netns", JEQ, rule.value & 0xFFFFFFFF)
    # nb_term's switch has no case for it: false
    return FALSE


def rules_tree(rules: Sequence[Rule]) -> Node:
    """The postfix program as one expression. REQUIRE pops a conjunct of the whole filter (a
    false one ends nb_filter_match with false); the result is the conjuncts AND the value left
    on top. As in the C interpreter, a non-empty program that leaves nothing on the stack
    yields false, and an empty one true."""
    if len(rules) > NB_MAX_RULES:
        raise FilterError(f"filter too complex: {len(rules)} operations, at most {NB_MAX_RULES}")
    if not rules:
        return TRUE
    stack: List[Node] = []
    required: List[Node] = []

    def pop(i: int) -> Node:
        if not stack:
            raise FilterError(f"malformed filter program: operation {i} has no operand")
        return stack.pop()

    for i, r in enumerate(rules):
        if r.op == OP_TERM:
            stack.append(term(r))
        elif r.op == OP_NOT:
            stack.append(negate(pop(i)))
        elif r.op == OP_REQUIRE:
            required.append(pop(i))
        elif r.op in (OP_AND, OP_OR):
            b, a = pop(i), pop(i)
            stack.append(all_of(a, b) if r.op == OP_AND else any_of(a, b))
        else:
            raise FilterError(f"malformed filter program: unknown operation {r.op} at {i}")
    return all_of(*required, stack[-1] if stack else FALSE)


# ---------------------------------------------------------------- emission

class _Jump(Record):
    __slots__ = ("op", "imm", "label")

    def __init__(self, op: Optional[int], imm: int, label: int) -> None:
        self.op = op   # JEQ...; None: unconditional
        self.imm = imm
        self.label = label


class _Emitter:
    def __init__(self) -> None:
        self.code: List[Union[bytes, _Jump, int]] = []    # int: a label placed here
        self.labels = 0

    def label(self) -> int:
        self.labels += 1
        return self.labels

    def test(self, t: Test, target: int, when: bool) -> None:
        """Jump to target if the test is `when`; fall through otherwise."""
        off, size = _OFFSETS[t.field]
        size = t.size or size
        self.code.append(I.ldx_mem(_LOAD_SIZE[size], R_TMP, R_EV, off + t.delta))
        if t.mask is not None:
            self.code.append(I.alu32_imm(I.BPF_AND, R_TMP, t.mask))
        self.code.append(_Jump(t.op if when else NEGATE[t.op], t.imm, target))

    def goto(self, target: int) -> None:
        self.code.append(_Jump(None, 0, target))

    def node(self, n: Node, t: int, f: int, nxt: int) -> None:
        """Code that goes to label t when n is true, to f when false; nxt is placed right
        after it, so a jump there is a fall-through instead."""
        if isinstance(n, Const):
            dest = t if n.value else f
            if dest != nxt:
                self.goto(dest)
        elif isinstance(n, Test):
            if nxt == f:
                self.test(n, t, True)
            elif nxt == t:
                self.test(n, f, False)
            else:
                self.test(n, t, True)
                self.goto(f)
        elif isinstance(n, Not):
            self.node(n.kid, f, t, nxt)
        else:
            is_and = isinstance(n, And)
            for kid in n.kids[:-1]:
                mid = self.label()
                if is_and:
                    self.node(kid, mid, f, mid)
                else:
                    self.node(kid, t, mid, mid)
                self.code.append(mid)
            self.node(n.kids[-1], t, f, nxt)

    def assemble(self) -> bytes:
        where: Dict[int, int] = {}
        pos = 0
        for item in self.code:
            if isinstance(item, int):
                where[item] = pos
            else:
                pos += 1
        out = bytearray()
        pos = 0
        for item in self.code:
            if isinstance(item, int):
                continue
            if isinstance(item, _Jump):
                off = where[item.label] - pos - 1
                if not -0x8000 <= off <= 0x7FFF:
                    raise FilterError(f"filter code too long: a jump of {off} instructions")
                item = I.ja(off) if item.op is None else I.jmp32_imm(item.op, R_TMP, item.imm, off)
            out += item
            pos += 1
        return bytes(out)


def compile_tree(tree: Node) -> bytes:
    """An expression tree as a complete BPF function body (r1 = event, returns r0)."""
    if isinstance(tree, Const):
        return I.mov64_imm(R0, int(tree.value)) + I.exit_insn()
    e = _Emitter()
    yes, no = e.label(), e.label()
    e.node(tree, yes, no, no)
    e.code += [no, I.mov64_imm(R0, 0), I.exit_insn(), yes, I.mov64_imm(R0, 1), I.exit_insn()]
    return e.assemble()


def compile_rules(rules: Sequence[Rule]) -> bytes:
    """The body of nb_filter_run for these rules (netbee.filter postfix); [] matches all."""
    return compile_tree(rules_tree(rules))
