"""REQUIRE in the kernel: a filter whose top-level "and"s compile to REQUIRE (the early exit)
keeps exactly the events of the same program written with plain ANDs, with the filter run as
generated code (netbee/filter_codegen.py), as the object's C interpreter, and as the C
interpreter of rules written at run time (TraceOptions.filter_dynamic).

The six tracers run at once over the same traffic, so each packet passes all of them: events
are compared by skb address, hook and flow, not by time.
"""
from __future__ import annotations

import collections
import contextlib
import time
from typing import List

import pytest

from netbee.filter import OP_AND, OP_REQUIRE, Rule, compile_filter
from netbee.tracer import TraceOptions, Tracer
from tests import netlab

pytestmark = [pytest.mark.kernel, pytest.mark.backend("tracepoint")]


def plain_and(rules: List[Rule]) -> List[Rule]:
    """The same program with every REQUIRE turned back into an AND of whole conjuncts."""
    kept = [r for r in rules if r.op != OP_REQUIRE]
    return kept + [Rule(OP_AND)] * (len(rules) - len(kept))


def key(e) -> tuple:
    return (e.skb, e.hook, e.nf_hook, e.verdict, str(e.saddr), str(e.daddr), e.proto, e.sport,
            e.dport, e.icmp_type)


def traffic(t: netlab.TwoHosts) -> None:
    netlab.ping(t.client, t.server_ip, count=2, interval=0.1)
    netlab.ping(t.client, t.server_ip6, count=2, interval=0.1)
    netlab.tcp_transfer(t.client, t.server, t.server_ip, 5201, 2000)
    netlab.udp_send(t.client, t.server_ip, 5353, open_port=True, dst_ns=t.server)
    netlab.udp_send(t.client, t.server_ip6, 9999, open_port=False)


@pytest.mark.parametrize("expr", [
    "udp and not port 22 and host {server}",
    "(icmp or tcp) and dst host {server}",
    "ip6 and not icmp6 and port 9999",
])
def test_require_and_plain_and_keep_the_same_events(two_hosts, expr):
    t = two_hosts
    netlab.ping(t.client, t.server_ip, count=1)      # neighbours resolved before tracing
    netlab.ping(t.client, t.server_ip6, count=1)
    inodes = [ns.inode() for ns in t.namespaces()]
    rules = compile_filter(expr.format(server=t.server_ip), netns_inodes=inodes)
    plain = plain_and(rules)
    assert sum(r.op == OP_REQUIRE for r in rules) >= 2 and not any(r.op == OP_REQUIRE for r in plain)
    variants = {(name, mode): TraceOptions(backend="tracepoint", netns=[str(ns.path) for ns in t.namespaces()],
                                           rules=rs, filter_interpreter=mode == "interpreter",
                                           filter_dynamic=mode == "dynamic")
                for name, rs in (("require", rules), ("and", plain))
                for mode in ("generated", "interpreter", "dynamic")}
    events = {v: [] for v in variants}
    counters = {}
    with contextlib.ExitStack() as stack:
        tracers = {v: stack.enter_context(Tracer(o)) for v, o in variants.items()}
        for tr in tracers.values():
            tr.start()
        traffic(t)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            for v, tr in tracers.items():
                events[v].extend(tr.events(timeout=0.02))
        counters = {v: tr.counters() for v, tr in tracers.items()}
    ours = {ns.inode() for ns in t.namespaces()}
    got = {v: collections.Counter(key(e) for e in evs if e.netns in ours) for v, evs in events.items()}
    reference = got[("require", "interpreter")]   # the C interpreter: the reference implementation
    assert reference, "no event kept: the expression should select some of the traffic"
    for v, c in counters.items():
        assert c.lost == 0, (v, c)
        assert c.filtered > 0, (v, c)   # the filter did reject packets
    for v, c in got.items():
        assert c == reference, (expr, v, "extra:", c - reference, "missing:", reference - c)
