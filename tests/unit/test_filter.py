"""filter.py: grammar, tcpdump semantics for the subset, options, limits, errors."""
from __future__ import annotations

import ipaddress
import itertools

import pytest

from netbee import filter as F
from netbee.filter import Rule, compile_filter, rules_match
from netbee.loader.errors import FilterError, UsageError


def pkt(family=4, proto=6, saddr="10.201.1.1", daddr="10.201.1.2", sport=1000, dport=80,
        ifindex=2, netns=4026531840):
    ports = proto in (6, 17, 132)
    return dict(family=family, proto=proto, saddr=ipaddress.ip_address(saddr) if saddr else None,
                daddr=ipaddress.ip_address(daddr) if daddr else None,
                sport=sport if ports else None, dport=dport if ports else None,
                ifindex=ifindex, netns=netns)


V6 = dict(family=6, saddr="fd00:201::1", daddr="fd00:201::2")


def match(expr, p, **opts):
    return rules_match(compile_filter(expr, **opts), p)


def test_empty_filter_matches_everything():
    assert compile_filter(None) == []
    assert compile_filter("   ") == []
    assert rules_match([], pkt())


def test_host_matches_either_direction_and_family():
    assert match("host 10.201.1.1", pkt())
    assert match("host 10.201.1.1", pkt(saddr="10.201.1.2", daddr="10.201.1.1"))
    assert not match("host 10.201.1.3", pkt())
    assert match("host fd00:201::2", pkt(**V6))
    assert not match("host 10.201.1.1", pkt(**V6))


def test_src_dst_host():
    assert match("src host 10.201.1.1", pkt())
    assert not match("dst host 10.201.1.1", pkt())
    assert match("dst 10.201.1.2", pkt())  # tcpdump's default type is host
    assert match("src or dst host 10.201.1.2", pkt())
    assert not match("src and dst host 10.201.1.2", pkt())
    assert match("src and dst host 10.201.1.2", pkt(saddr="10.201.1.2"))


def test_net_forms():
    assert match("net 10.201.0.0/16", pkt())
    assert match("net 10.201", pkt())
    assert match("net 10.0.0.0 mask 255.0.0.0", pkt())
    assert not match("net 10.202.0.0/16", pkt())
    assert match("dst net fd00:201::/64", pkt(**V6))
    with pytest.raises(FilterError, match="non-network bits"):
        compile_filter("net 10.201.1.1/16")
    with pytest.raises(FilterError, match="networks only"):
        compile_filter("host 10.0.0.0/8")


def test_ports_only_for_tcp_udp_sctp():
    assert match("port 80", pkt())
    assert match("port 80", pkt(proto=17))
    assert match("port 80", pkt(proto=132))
    assert not match("port 80", pkt(proto=1))
    assert match("src port 1000", pkt())
    assert not match("dst port 1000", pkt())
    assert match("portrange 79-81", pkt())
    assert match("dst portrange 70-90", pkt())
    assert not match("src portrange 70-90", pkt())
    assert match("tcp port 80", pkt()) and not match("udp port 80", pkt())
    assert match("tcp dst port 80", pkt())


def test_protocols_and_families():
    assert match("tcp", pkt()) and match("tcp", pkt(**V6))
    assert match("udp", pkt(proto=17))
    assert match("icmp", pkt(proto=1)) and not match("icmp", pkt(proto=1, **V6))
    assert match("icmp6", pkt(proto=58, **V6)) and not match("icmp6", pkt(proto=58))
    assert match("ip", pkt()) and not match("ip", pkt(**V6))
    assert match("ip6", pkt(**V6)) and not match("ip6", pkt())
    assert match("proto 47", pkt(proto=47)) and match("proto 47", pkt(proto=47, **V6))
    assert match("ip proto 47", pkt(proto=47)) and not match("ip proto 47", pkt(proto=47, **V6))
    assert match("ip6 proto 47", pkt(proto=47, **V6))
    assert match("proto \\udp", pkt(proto=17))
    nonip = dict(family=0, proto=None, saddr=None, daddr=None, sport=None, dport=None)
    assert not match("ip or ip6 or tcp or port 80 or host 10.0.0.1", nonip)
    assert match("not ip and not ip6", nonip)


@pytest.mark.parametrize("expr,expected", [
    # pcap-filter(7): and/or have equal precedence, left to right; not binds tightest.
    ("A or B and C", lambda a, b, c: (a or b) and c),
    ("A and B or C", lambda a, b, c: (a and b) or c),
    ("not A and B", lambda a, b, c: (not a) and b),
    ("not A or B and C", lambda a, b, c: ((not a) or b) and c),
    ("A or (B and C)", lambda a, b, c: a or (b and c)),
    ("! A && ! (B || C)", lambda a, b, c: (not a) and not (b or c)),
    ("not not A", lambda a, b, c: a),
])
def test_precedence_and_associativity(expr, expected):
    # Term X is `src host <X>`; a packet whose source is X makes exactly that term true, so
    # evaluate every assignment with three sub-programs glued the way the compiler glued them.
    hosts = {"A": "10.201.0.1", "B": "10.201.0.2", "C": "10.201.0.3"}
    text = expr
    for k, v in hosts.items():
        text = text.replace(k, f"src host {v}")
    rules = compile_filter(text)
    for a, b, c in itertools.product([False, True], repeat=3):
        flags = {hosts["A"]: a, hosts["B"]: b, hosts["C"]: c}
        # Replace each term by TRUE or NOT TRUE per the assignment; rules_match evaluates the rest.
        program = []
        for r in rules:
            if r.op == F.OP_TERM:
                program.append(Rule(F.OP_TERM, F.F_TRUE))
                if not flags[str(ipaddress.IPv4Address(r.addr[:4]))]:
                    program.append(Rule(F.OP_NOT))
            else:
                program.append(r)
        assert rules_match(program, pkt()) == expected(a, b, c), (expr, a, b, c)


def test_keywordless_identifier_reuses_last_qualifier():
    assert compile_filter("host 10.0.0.1 or 10.0.0.2") == \
        compile_filter("host 10.0.0.1 or host 10.0.0.2")
    assert compile_filter("not dst port 22 and 80") == \
        compile_filter("not dst port 22 and dst port 80")
    assert compile_filter("10.0.0.1") == compile_filter("host 10.0.0.1")


def test_postfix_shape():
    # A top-level "and" becomes REQUIRE: the kernel stops at the first false conjunct.
    rules = compile_filter("tcp and port 80")
    assert [(r.op, r.field) for r in rules] == [
        (F.OP_TERM, F.F_PROTO), (F.OP_REQUIRE, F.F_TRUE), (F.OP_TERM, F.F_ANY_PORT)]
    # Nested "and"s stay AND; the expression comes before the options, the scope last.
    rules = compile_filter("udp or (tcp and port 80)", netns_inodes=[7, 8])
    assert [r.op for r in rules] == [F.OP_TERM, F.OP_TERM, F.OP_TERM, F.OP_AND, F.OP_OR, F.OP_REQUIRE,
                                     F.OP_TERM, F.OP_TERM, F.OP_OR]
    assert rules[-3].field == F.F_NETNS and rules[-3].value == 7


def _plain_and(rules):
    """The same program with every REQUIRE turned back into an AND of the conjuncts."""
    out, pending = [], 0
    for r in rules:
        if r.op == F.OP_REQUIRE:
            pending += 1
        else:
            out.append(r)
    # REQUIRE separates whole conjuncts: AND-ing them all at the end gives the same value.
    return out + [Rule(F.OP_AND)] * pending


@pytest.mark.parametrize("expr,opts", [
    ("tcp and port 80", {}),
    ("host 10.201.0.1 and not port 22 and (udp or icmp)", {"netns_inodes": [5, 6]}),
    ("src net 10.201.0.0/16 and dst port 53", {"protocols": ["udp"], "ifindexes": [2]}),
    (None, {"protocols": ["icmp"], "hosts": ["10.201.0.2"], "netns_inodes": [5]}),
])
def test_require_equals_and(expr, opts):
    rules = compile_filter(expr, **opts)
    assert any(r.op == F.OP_REQUIRE for r in rules)
    plain = _plain_and(rules)
    for proto, saddr, daddr, sport, dport, ifindex, netns in itertools.product(
            (1, 6, 17), ("10.201.0.1", "10.201.7.7"), ("10.201.0.2", "10.9.9.9"), (22, 5000), (53, 80),
            (2, 3), (5, 9)):
        p = pkt(proto=proto, saddr=saddr, daddr=daddr, sport=sport, dport=dport, ifindex=ifindex, netns=netns)
        assert rules_match(rules, p) == rules_match(plain, p), (expr, opts, p)
    r = compile_filter("net 10.201.0.0/16")[0]
    assert r.family == 4 and r.addr == bytes([10, 201]) + bytes(14)
    assert r.mask == b"\xff\xff" + bytes(14)
    r6 = compile_filter("host fd00:201::1")[0]
    assert r6.family == 6 and r6.mask == b"\xff" * 16


def test_options_or_within_and_across():
    rules = compile_filter(None, protocols=["icmp,tcp"], hosts=["10.201.1.1"])
    assert match(None, pkt(proto=6), protocols=["icmp,tcp"], hosts=["10.201.1.1"])
    assert rules_match(rules, pkt(proto=1))
    assert not rules_match(rules, pkt(proto=17))
    assert not rules_match(rules, pkt(proto=6, saddr="10.201.9.9"))
    assert match("port 80", pkt(), ports=["1000"])
    assert not match("port 81", pkt(), ports=["1000"])
    assert match(None, pkt(), src_ports=["900-1100"], dst_ports=["80"])
    assert not match(None, pkt(), src_ports=["80"])
    assert match(None, pkt(), src_hosts=["10.201.0.0/16"], dst_hosts=["10.201.1.2", "10.9.9.9"])
    assert not match(None, pkt(), dst_hosts=["10.201.1.1"])
    assert match(None, pkt(), protocols=["6"])
    assert match(None, pkt(), ifindexes=[2, 3]) and not match(None, pkt(), ifindexes=[3])
    assert match(None, pkt(), netns_inodes=[4026531840])
    assert not match(None, pkt(), netns_inodes=[1])


@pytest.mark.parametrize("kwargs,message", [
    (dict(hosts=["300.1.1.1"]), "bad host '300.1.1.1'"),
    (dict(ports=["70000"]), "bad port '70000': must be 0-65535"),
    (dict(ports=["1-70000"]), "bad port '70000'"),
    (dict(protocols=["foo"]), "bad protocol 'foo'"),
    (dict(protocols=["256"]), "bad protocol '256'"),
])
def test_option_errors(kwargs, message):
    with pytest.raises(FilterError) as info:
        compile_filter(None, **kwargs)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, UsageError)


@pytest.mark.parametrize("expr,message", [
    ("host and", "bad filter: expected an address after 'host'"),
    ("host", "bad filter: expected an address after 'host'"),
    ("port", "bad filter: expected a port after 'port'"),
    ("port 70000", "bad filter: bad port '70000': must be 0-65535"),
    ("portrange 10", "bad filter: bad port range '10'"),
    ("net", "bad filter: expected a network after 'net'"),
    ("host 10.0.0.1 and", "bad filter: expected an expression after 'and'"),
    ("(tcp", "bad filter: expected ')' at end of expression"),
    ("tcp)", "bad filter: unexpected ')'"),
    ("tcp udp", "bad filter: unexpected 'udp' (missing 'and'/'or'?)"),
    ("not", "bad filter: expected an expression after 'not'"),
    ("proto", "bad filter: expected a protocol after 'proto'"),
    ("proto foo", "bad filter: bad protocol 'foo'"),
    ("tcp host 10.0.0.1", "bad filter: 'tcp' modifier applied to 'host'"),
    ("ip host fd00::1", "bad filter: 'ip' modifier applied to IPv6 'fd00::1'"),
    ("host 999.1.1.1", "bad filter: bad address '999.1.1.1'"),
    ("or tcp", "bad filter: expected an expression, got 'or'"),
    ("tcp $ udp", "bad filter: unexpected '$'"),
])
def test_expression_errors_name_the_token(expr, message):
    with pytest.raises(FilterError) as info:
        compile_filter(expr)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_rule_limit():
    expr = " or ".join(f"port {p}" for p in range(16))  # 16 terms + 15 ors = 31
    assert len(compile_filter(expr)) == 31
    with pytest.raises(FilterError, match=r"^filter too complex: 33 operations, at most 32$"):
        compile_filter(expr, ifindexes=[1])
    with pytest.raises(FilterError, match=r"^filter too complex: 33 operations"):
        compile_filter(expr + " and tcp")


def test_service_names():
    assert compile_filter("port 80") == compile_filter("port http")


def test_encode_rules_layout():
    import struct
    from netbee import abi
    rules = compile_filter("net 10.201.0.0/16 and not portrange 5-9", ifindexes=[7])
    blob = F.encode_rules(rules)
    assert len(blob) == len(rules) * abi.RULE_SIZE == len(rules) * 44
    recs = [struct.unpack_from("=BBBBHHI16s16s", blob, i * 44) for i in range(len(rules))]
    assert [(r.op, r.field, r.family, 0, r.lo, r.hi, r.value, r.addr, r.mask) for r in rules] == recs
    cfg = abi.CONFIG.parse(abi.build_config(blob, len(rules)))
    # the scope (ifindex) is the last conjunct: the kernel checks it only for packets that passed the rest
    assert cfg.filter_len == len(rules) and cfg.rules[len(rules) - 1].value == 7


def test_describe_rules():
    rules = compile_filter("not net 10.201.0.0/16 or host fd00::1 and portrange 5-9", ifindexes=[3])
    assert F.describe_rules(rules) == (
        "net=10.201.0.0/16 NOT net=fd00::1/128 OR REQUIRE port=5-9 REQUIRE ifindex=3")
    assert F.describe_rules([]) == "(empty: everything matches)"


def test_field_mask_names_every_term_field():
    assert F.field_mask([]) == 0
    rules = compile_filter("tcp and port 80", netns_inodes=[7])
    assert F.field_mask(rules) == (1 << F.F_PROTO) | (1 << F.F_ANY_PORT) | (1 << F.F_NETNS)
    assert not F.field_mask(compile_filter("host 10.201.0.1")) & (
        (1 << F.F_SRC_PORT) | (1 << F.F_DST_PORT) | (1 << F.F_ANY_PORT))
