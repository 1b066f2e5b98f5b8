"""Filters: a tcpdump-subset expression plus the CLI options -> a postfix program of nb_rule.

Grammar (pcap-filter(7) for this subset): `not`/`!` binds tightest; `and`/`&&` and `or`/`||`
have EQUAL precedence and associate left to right, so `a or b and c` is `(a or b) and c`.
An identifier without a keyword reuses the most recent qualifiers (`host a or b`).

The kernel evaluates the program on a stack of booleans (netbee_abi.h, enum nb_rule_op).
`rules_match` is the same evaluator in Python; tests use it to cross-check the compiler.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

from netbee.loader.errors import FilterError
from netbee.loader.record import FrozenRecord, Record

NB_MAX_RULES = 32

OP_TERM, OP_AND, OP_OR, OP_NOT, OP_REQUIRE = 0, 1, 2, 3, 4
(F_TRUE, F_FAMILY, F_PROTO, F_SRC_NET, F_DST_NET, F_ANY_NET,
 F_SRC_PORT, F_DST_PORT, F_ANY_PORT, F_IFINDEX, F_NETNS) = range(11)

# Transports that carry ports, as tcpdump's `port` primitive understands them.
PORT_PROTOS = (6, 17, 132)
PROTO_NAMES = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ah": 51,
               "icmp6": 58, "sctp": 132}
ZERO16 = bytes(16)


class Rule(FrozenRecord):
    """One nb_rule. addr is stored already masked; IPv4 sits in the first 4 bytes."""
    __slots__ = ("op", "field", "family", "lo", "hi", "value", "addr", "mask")

    def __init__(self, op: int,
                 field: int = F_TRUE, family: int = 0, lo: int = 0, hi: int = 0, value: int = 0,
                 addr: bytes = ZERO16, mask: bytes = ZERO16) -> None:
        self.op = op
        self.field = field
        self.family = family
        self.lo = lo
        self.hi = hi
        self.value = value
        self.addr = addr
        self.mask = mask


# ---------------------------------------------------------------- AST and emission

class _Node(Record):
    __slots__ = ("op", "term", "kids")

    def __init__(self, op: int, term: Optional[Rule] = None, kids: Optional[List["_Node"]] = None) -> None:
        self.op = op
        self.term = term
        self.kids = [] if kids is None else kids


def _term(field: int, **kw: Any) -> _Node:
    return _Node(OP_TERM, Rule(OP_TERM, field, **kw))


def _and(a: _Node, b: _Node) -> _Node:
    return _Node(OP_AND, kids=[a, b])


def _or(a: _Node, b: _Node) -> _Node:
    return _Node(OP_OR, kids=[a, b])


def _not(a: _Node) -> _Node:
    return _Node(OP_NOT, kids=[a])


def _conjuncts(node: _Node) -> List[_Node]:
    """The operands of a top-level chain of "and"s (the node itself if it is no "and")."""
    if node.op == OP_AND and node.term is None:
        return [c for kid in node.kids for c in _conjuncts(kid)]
    return [node]


def _emit(node: _Node, out: List[Rule]) -> None:
    for kid in node.kids:
        _emit(kid, out)
    out.append(node.term if node.term is not None else Rule(node.op))


def _family_term(family: int) -> _Node:
    return _term(F_FAMILY, lo=family, hi=family)


def _proto_term(proto: int, family: int = 0) -> _Node:
    # The family is ANDed explicitly (not folded into the rule) so the kernel side only has to
    # honour `family` for the NET fields.
    node = _term(F_PROTO, lo=proto, hi=proto)
    return node if not family else _and(_family_term(family), node)


def _net_term(field: int, net: Union[ipaddress.IPv4Network, ipaddress.IPv6Network]) -> _Node:
    size = 4 if net.version == 4 else 16
    addr = net.network_address.packed.ljust(16, b"\0")
    mask = net.netmask.packed.ljust(16, b"\0")
    assert len(addr) == 16 and size in (4, 16)
    return _term(field, family=net.version, addr=addr, mask=mask)


def _port_term(field: int, lo: int, hi: int) -> _Node:
    return _term(field, lo=lo, hi=hi)


# ---------------------------------------------------------------- values

def parse_net(text: str, what: str = "address", allow_cidr: bool = True,
              mask_text: Optional[str] = None, partial: bool = False
              ) -> Union[ipaddress.IPv4Network, ipaddress.IPv6Network]:
    """An address or CIDR; host bits outside the mask are an error, as in tcpdump."""
    raw = text
    if partial and mask_text is None and "/" not in text and ":" not in text and re.fullmatch(r"\d+(\.\d+){0,2}", text):
        # tcpdump's `net 10` / `net 10.1`: the given octets are the network.
        octets = text.split(".")
        text = ".".join(octets + ["0"] * (4 - len(octets))) + f"/{8 * len(octets)}"
    if mask_text is not None:
        try:
            mask = ipaddress.IPv4Address(mask_text)
        except ValueError:
            raise FilterError(f"bad filter: bad mask {mask_text!r}") from None
        text = f"{text}/{mask}"
    if "/" in text and not allow_cidr:
        raise FilterError(f"bad filter: {raw!r}: mask syntax is for networks only (use 'net')")
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            raise FilterError(f"bad {what} {raw!r}: non-network bits set") from None
        raise FilterError(f"bad {what} {raw!r}: not an IPv4/IPv6 address"
                          + (" or network" if allow_cidr else "")) from None


def parse_port(text: str, what: str = "port") -> int:
    if text.isdigit():
        value = int(text)
        if value > 65535:
            raise FilterError(f"bad {what} {text!r}: must be 0-65535")
        return value
    import socket   # (only for a named port: it is ~3 ms of every start)

    for proto in ("tcp", "udp"):
        try:
            return socket.getservbyname(text, proto)
        except OSError:
            continue
    raise FilterError(f"bad {what} {text!r}: not a number 0-65535 or a known service")


def parse_port_range(text: str, what: str = "port") -> Tuple[int, int]:
    """`N` or `A-B` (inclusive)."""
    if "-" in text:
        a, _, b = text.partition("-")
        lo, hi = parse_port(a, what), parse_port(b, what)
        if lo > hi:
            lo, hi = hi, lo
        return lo, hi
    value = parse_port(text, what)
    return value, value


def parse_proto(text: str) -> int:
    name = text.lstrip("\\").lower()
    if name in PROTO_NAMES:
        return PROTO_NAMES[name]
    if name.isdigit() and int(name) <= 255:
        return int(name)
    raise FilterError(f"bad protocol {text!r}: expected tcp, udp, icmp, icmp6, sctp or a number 0-255")


def protocol_node(text: str) -> _Node:
    """A protocol name as a primitive: `icmp` is IPv4 only and `icmp6` IPv6 only (tcpdump)."""
    proto = parse_proto(text)
    name = text.lstrip("\\").lower()
    if name == "icmp":
        return _proto_term(1, 4)
    if name == "icmp6":
        return _proto_term(58, 6)
    return _proto_term(proto)


# ---------------------------------------------------------------- tokenizer and parser

_TOKEN = re.compile(r"\s*(\(|\)|&&|\|\||!|[^\s()!&|]+)")
_DIRS = ("src", "dst")
_TYPES = ("host", "net", "port", "portrange")
_QUALS = ("ip", "ip6", "tcp", "udp", "sctp")
_KEYWORDS = set(_DIRS + _TYPES + _QUALS + ("and", "or", "not", "proto", "icmp", "icmp6", "mask"))


def tokenize(text: str) -> List[str]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise FilterError(f"bad filter: unexpected character {text[pos:].strip()[:1]!r}")
        tokens.append(m.group(1))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, tokens: List[str]) -> None:
        self.toks = tokens
        self.pos = 0
        # Most recent (proto qualifier, direction, type) for keyword-less identifiers.
        self.last: Optional[Tuple[Optional[str], str, str]] = None

    def peek(self, ahead: int = 0) -> Optional[str]:
        i = self.pos + ahead
        return self.toks[i].lower() if i < len(self.toks) else None

    def take(self) -> str:
        tok = self.toks[self.pos]
        self.pos += 1
        return tok

    def where(self) -> str:
        return f"at {self.toks[self.pos]!r}" if self.pos < len(self.toks) else "at end of expression"

    def parse(self) -> _Node:
        node = self.expr()
        if self.pos < len(self.toks):
            raise FilterError(f"bad filter: unexpected {self.toks[self.pos]!r}"
                              + (" (missing 'and'/'or'?)" if self.toks[self.pos] != ")" else ""))
        return node

    def expr(self) -> _Node:
        node = self.unary()
        while self.peek() in ("and", "&&", "or", "||"):
            op = self.take().lower()
            rhs = self.unary(after=op)
            node = _and(node, rhs) if op in ("and", "&&") else _or(node, rhs)
        return node

    def unary(self, after: Optional[str] = None) -> _Node:
        tok = self.peek()
        if tok is None:
            if after:
                raise FilterError(f"bad filter: expected an expression after {after!r}")
            raise FilterError("bad filter: empty expression")
        if tok in ("not", "!"):
            op = self.take()
            return _not(self.unary(after=op))
        if tok == "(":
            self.take()
            node = self.expr()
            if self.peek() != ")":
                raise FilterError(f"bad filter: expected ')' {self.where()}")
            self.take()
            return node
        if tok in ("and", "&&", "or", "||", ")"):
            prev = f" after {after!r}" if after else ""
            raise FilterError(f"bad filter: expected an expression{prev}, got {self.toks[self.pos]!r}")
        return self.primitive()

    def primitive(self) -> _Node:
        tok = self.peek()
        nxt = self.peek(1)
        if tok in ("icmp", "icmp6"):
            return protocol_node(self.take())
        qual = None
        if tok in _QUALS:
            if nxt in _DIRS + _TYPES + ("proto",):
                qual = self.take().lower()
            elif tok in ("ip", "ip6"):
                self.take()
                return _family_term(4 if tok == "ip" else 6)
            else:
                return protocol_node(self.take())
        if self.peek() == "proto":
            return self.proto_primitive(qual)
        direction = "any"
        if self.peek() in _DIRS:
            direction = self.take().lower()
            if self.peek() in ("or", "and") and self.peek(1) in _DIRS and self.peek(1) != direction:
                direction = "any" if self.take().lower() == "or" else "both"
                self.take()
        if self.peek() in _TYPES:
            kind = self.take().lower()
        elif qual is None and direction == "any" and self.peek() not in _KEYWORDS and self.last:
            qual, direction, kind = self.last  # keyword-less identifier: reuse the last qualifiers
        elif direction != "any" or qual in ("ip", "ip6"):
            kind = "host"  # `src 10.0.0.1`: tcpdump's default type is host
        elif qual is None and direction == "any" and self.peek() not in _KEYWORDS:
            kind = "host"
        else:
            got = self.toks[self.pos] if self.pos < len(self.toks) else None
            raise FilterError(f"bad filter: unexpected {got!r}" if got else
                              "bad filter: unexpected end of expression")
        self.last = (qual, direction, kind)
        return self.value_primitive(qual, direction, kind)

    def proto_primitive(self, qual: Optional[str]) -> _Node:
        kw = self.take()
        if qual not in (None, "ip", "ip6"):
            raise FilterError(f"bad filter: '{qual} proto' is not valid (use 'ip proto' or 'ip6 proto')")
        if self.peek() is None or self.peek() in ("and", "or", "not", "(", ")", "&&", "||", "!"):
            raise FilterError(f"bad filter: expected a protocol after {kw!r}")
        proto = parse_proto(self.take())
        family = {"ip": 4, "ip6": 6}.get(qual or "", 0)
        return _proto_term(proto, family)

    def value_primitive(self, qual: Optional[str], direction: str, kind: str) -> _Node:
        tok = self.peek()
        what = {"host": "an address", "net": "a network", "port": "a port",
                "portrange": "a port range"}[kind]
        if tok is None or tok in _KEYWORDS or tok in ("(", ")", "&&", "||", "!"):
            raise FilterError(f"bad filter: expected {what} after {kind!r}")
        text = self.take()
        if kind in ("host", "net"):
            if qual in ("tcp", "udp", "sctp"):
                raise FilterError(f"bad filter: '{qual}' modifier applied to '{kind}'")
            mask = None
            if kind == "net" and self.peek() == "mask":
                self.take()
                if self.peek() is None:
                    raise FilterError("bad filter: expected a mask after 'mask'")
                mask = self.take()
            net = parse_net(text, "address" if kind == "host" else "network",
                            allow_cidr=(kind == "net"), mask_text=mask, partial=(kind == "net"))
            if qual and net.version != (4 if qual == "ip" else 6):
                raise FilterError(f"bad filter: '{qual}' modifier applied to IPv{net.version} {text!r}")
            fields = {"src": [F_SRC_NET], "dst": [F_DST_NET], "any": [F_ANY_NET],
                      "both": [F_SRC_NET, F_DST_NET]}[direction]
            node = _net_term(fields[0], net)
            for f in fields[1:]:
                node = _and(node, _net_term(f, net))
            return node
        if qual in ("ip", "ip6"):
            raise FilterError(f"bad filter: '{qual}' modifier applied to '{kind}'")
        if kind == "port":
            if "-" in text and not text.isdigit():
                raise FilterError(f"bad filter: bad port {text!r} (use 'portrange' for a range)")
            lo = hi = parse_port(text)
        else:
            if "-" not in text:
                raise FilterError(f"bad filter: bad port range {text!r}: expected A-B")
            lo, hi = parse_port_range(text)
        fields = {"src": [F_SRC_PORT], "dst": [F_DST_PORT], "any": [F_ANY_PORT],
                  "both": [F_SRC_PORT, F_DST_PORT]}[direction]
        node = _port_term(fields[0], lo, hi)
        for f in fields[1:]:
            node = _and(node, _port_term(f, lo, hi))
        if qual:
            node = _and(_proto_term(PROTO_NAMES[qual]), node)
        return node


# ---------------------------------------------------------------- options and the whole program

def _split(values: Iterable[Any]) -> List[str]:
    out: List[str] = []
    for v in values:
        out.extend(p.strip() for p in str(v).split(",") if p.strip())
    return out


def _any_of(nodes: Sequence[_Node]) -> Optional[_Node]:
    result: Optional[_Node] = None
    for n in nodes:
        result = n if result is None else _or(result, n)
    return result


def _option_nodes(protocols: Iterable[Any], hosts: Iterable[Any], src_hosts: Iterable[Any],
                  dst_hosts: Iterable[Any], ports: Iterable[Any], src_ports: Iterable[Any],
                  dst_ports: Iterable[Any], ifindexes: Iterable[int],
                  netns_inodes: Iterable[int]) -> List[_Node]:
    groups: List[List[_Node]] = [[protocol_node(p) for p in _split(protocols)]]
    for values, field in ((hosts, F_ANY_NET), (src_hosts, F_SRC_NET), (dst_hosts, F_DST_NET)):
        groups.append([_net_term(field, parse_net(v, "host")) for v in _split(values)])
    for values, field in ((ports, F_ANY_PORT), (src_ports, F_SRC_PORT), (dst_ports, F_DST_PORT)):
        groups.append([_port_term(field, *parse_port_range(v)) for v in _split(values)])
    for values, field, what in ((ifindexes, F_IFINDEX, "interface index"),
                                (netns_inodes, F_NETNS, "netns inode")):
        nodes = []
        for v in values:
            if not 0 < int(v) < 1 << 32:
                raise FilterError(f"bad {what} {v!r}")
            nodes.append(_term(field, value=int(v)))
        groups.append(nodes)
    return [n for n in (_any_of(g) for g in groups) if n is not None]


def compile_filter(expression: Optional[str], *, protocols: Iterable[Any] = (),
                   hosts: Iterable[Any] = (), src_hosts: Iterable[Any] = (),
                   dst_hosts: Iterable[Any] = (), ports: Iterable[Any] = (),
                   src_ports: Iterable[Any] = (), dst_ports: Iterable[Any] = (),
                   ifindexes: Iterable[int] = (), netns_inodes: Iterable[int] = ()) -> List[Rule]:
    """Expression AND options -> postfix rules; [] means "match everything"."""
    parts = _option_nodes(protocols, hosts, src_hosts, dst_hosts, ports, src_ports, dst_ports,
                          ifindexes, netns_inodes)
    has_expression = expression is not None and bool(expression.strip())
    if has_expression:
        try:
            parts.append(_Parser(tokenize(expression)).parse())
        except FilterError as exc:
            msg = str(exc)
            raise FilterError(msg if msg.startswith("bad filter:") else f"bad filter: {msg}") from None
    # The expression's conjuncts first (usually the most selective), the options' scope
    # (interfaces, namespaces) last: the kernel stops at the first false one.
    if has_expression:
        parts = parts[-1:] + parts[:-1]
    conjuncts: List[_Node] = []
    for p in parts:
        conjuncts.extend(_conjuncts(p))
    rules: List[Rule] = []
    for i, c in enumerate(conjuncts):
        _emit(c, rules)
        if i < len(conjuncts) - 1:
            # c REQUIRE: a false conjunct decides the whole filter (the last one's value is the result)
            rules.append(Rule(OP_REQUIRE))
    if len(rules) > NB_MAX_RULES:
        raise FilterError(f"filter too complex: {len(rules)} operations, at most {NB_MAX_RULES}")
    return rules


_FIELD_NAMES = {F_TRUE: "true", F_FAMILY: "family", F_PROTO: "proto", F_SRC_NET: "src net",
                F_DST_NET: "dst net", F_ANY_NET: "net", F_SRC_PORT: "src port",
                F_DST_PORT: "dst port", F_ANY_PORT: "port", F_IFINDEX: "ifindex", F_NETNS: "netns"}


def describe_rules(rules: Sequence[Rule]) -> str:
    """The postfix program in words, for -v: "family=4 proto=1 AND"."""
    words = []
    for r in rules:
        if r.op != OP_TERM:
            words.append({OP_AND: "AND", OP_OR: "OR", OP_NOT: "NOT",
                          OP_REQUIRE: "REQUIRE"}.get(r.op, f"op{r.op}"))
            continue
        name = _FIELD_NAMES.get(r.field, f"field{r.field}")
        if r.field in (F_SRC_NET, F_DST_NET, F_ANY_NET):
            size = 4 if r.family == 4 else 16
            net = ipaddress.ip_network((r.addr[:size], bin(int.from_bytes(r.mask[:size], "big")).count("1")))
            words.append(f"{name}={net}")
        elif r.field in (F_SRC_PORT, F_DST_PORT, F_ANY_PORT):
            words.append(f"{name}={r.lo}" + (f"-{r.hi}" if r.hi != r.lo else ""))
        elif r.field in (F_IFINDEX, F_NETNS):
            words.append(f"{name}={r.value}")
        elif r.field == F_TRUE:
            words.append(name)
        else:
            words.append(f"{name}={r.lo}")
    return " ".join(words) or "(empty: everything matches)"


def encode_rules(rules: Sequence[Rule]) -> bytes:
    """The rules as consecutive struct nb_rule records (abi.RULE)."""
    from netbee import abi
    return b"".join(abi.RULE.build(dict(op=r.op, field=r.field, family=r.family, pad=0, lo=r.lo,
                                        hi=r.hi, value=r.value, addr=r.addr, mask=r.mask))
                    for r in rules)


def field_mask(rules: Sequence[Rule]) -> int:
    """Bit 1 << field for every field a term of the rules looks at: the kernel's filter_fields,
    which tells the programs what to read before the filter can run."""
    mask = 0
    for r in rules:
        if r.op == OP_TERM:
            mask |= 1 << r.field
    return mask


# ---------------------------------------------------------------- reference evaluator

def _get(pkt: Any, name: str) -> Any:
    if isinstance(pkt, dict):
        return pkt.get(name)
    return getattr(pkt, name, None)


def _addr16(addr: Any) -> Optional[bytes]:
    if addr is None:
        return None
    if isinstance(addr, (bytes, bytearray)):
        return bytes(addr).ljust(16, b"\0")
    return ipaddress.ip_address(addr).packed.ljust(16, b"\0")


def _net_hit(rule: Rule, family: int, addr: Any) -> bool:
    a = _addr16(addr)
    if family != rule.family or a is None:
        return False
    return all((x & m) == y for x, m, y in zip(a, rule.mask, rule.addr))


def _term_value(rule: Rule, pkt: Any) -> bool:
    family = _get(pkt, "family") or 0
    proto = _get(pkt, "proto")
    f = rule.field
    if f == F_TRUE:
        return True
    if f == F_FAMILY:
        return family == rule.lo
    if f == F_PROTO:
        return family in (4, 6) and proto == rule.lo
    if f in (F_SRC_NET, F_DST_NET, F_ANY_NET):
        src = f in (F_SRC_NET, F_ANY_NET) and _net_hit(rule, family, _get(pkt, "saddr"))
        dst = f in (F_DST_NET, F_ANY_NET) and _net_hit(rule, family, _get(pkt, "daddr"))
        return src or dst
    if f in (F_SRC_PORT, F_DST_PORT, F_ANY_PORT):
        if family not in (4, 6) or proto not in PORT_PROTOS:
            return False
        sport, dport = _get(pkt, "sport"), _get(pkt, "dport")
        src = f in (F_SRC_PORT, F_ANY_PORT) and sport is not None and rule.lo <= sport <= rule.hi
        dst = f in (F_DST_PORT, F_ANY_PORT) and dport is not None and rule.lo <= dport <= rule.hi
        return src or dst
    if f == F_IFINDEX:
        return _get(pkt, "ifindex") == rule.value
    if f == F_NETNS:
        return _get(pkt, "netns") == rule.value
    raise FilterError(f"unknown rule field {f}")


def rules_match(rules: Sequence[Rule], packet_fields: Any) -> bool:
    """Evaluate the postfix program the way the kernel does; an empty program matches all."""
    stack: List[bool] = []
    for r in rules:
        if r.op == OP_TERM:
            stack.append(_term_value(r, packet_fields))
        elif r.op == OP_NOT:
            stack.append(not stack.pop())
        elif r.op == OP_REQUIRE:
            if not stack.pop():
                return False
        else:
            b, a = stack.pop(), stack.pop()
            stack.append((a and b) if r.op == OP_AND else (a or b))
    return stack[-1] if stack else True
