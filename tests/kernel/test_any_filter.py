"""Programs for any filter (TraceOptions.any_filter_programs, bpf/src/nb_filter.h's dyn_filter):
a first run loads its own programs and, in the background, the set that reads its rules at run
time; a run with a new filter starts on that set with its own rules written in, keeps exactly
the packets its filter selects, and loads its own compiled programs in the background, which
the next run of that command then reuses.

Traffic: UDP datagrams on the loopback device of the initial namespace, to ports of the test's
own, so only the test's packets can match.
"""
from __future__ import annotations

import os
import socket
import time

import pytest

from netbee.filter import compile_filter
from netbee.tracer import TraceOptions, Tracer
from tests.kernel.test_progcache import scratch_cache

pytestmark = [pytest.mark.kernel, pytest.mark.backend("tracepoint")]

BASE = 43000 + os.getpid() % 1000 * 4
PORT_A, PORT_B, PORT_C = BASE, BASE + 1, BASE + 2
ANY_HIT = "miss; started on the programs for any filter (hit)"


@pytest.fixture
def cache(tmp_path):
    with scratch_cache(tmp_path, "nbany", 4) as c:
        yield c


def _send(port: int, n: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(n):
            s.sendto(b"netbee-any-%d" % i, ("127.0.0.1", port))


def _run(cache, expr: str, sends: dict[int, int], backend: str = "tracepoint", settle: float = 0.4):
    """One run of `expr`: (cache status, background status at the end, {dport: events}, counters)."""
    with Tracer(TraceOptions(backend=backend, rules=compile_filter(expr), cache=cache,
                             any_filter_programs=True)) as tr:
        assert tr.start().backend == backend
        status = tr.cache_status
        for port, n in sends.items():
            _send(port, n)
        events, deadline = [], time.monotonic() + settle
        while time.monotonic() < deadline:
            events += tr.read_events(0.05)
        counters = tr.counters()
        assert tr.wait_background(600), "the background load did not end"
        by_port: dict[int, int] = {}
        for e in events:
            if e.func == "netif_receive_skb":     # one event per datagram
                by_port[e.dport] = by_port.get(e.dport, 0) + 1
        return status, tr.background_status, by_port, counters


def test_a_new_filter_starts_on_the_programs_for_any_filter(cache):
    # 1: nothing cached: its own programs, loaded afresh; the any-filter set in the background
    status, background, got, counters = _run(cache, f"udp and dst port {PORT_A}", {PORT_A: 3, PORT_B: 2})
    assert status.startswith("miss, stored"), status
    assert background.startswith("miss, stored"), background
    assert got == {PORT_A: 3} and counters.lost == 0
    assert len(cache.keys()) == 2

    # 2: a new filter: started at once on the any-filter set with its rules written in
    status, background, got, counters = _run(cache, f"udp and dst port {PORT_B}", {PORT_A: 2, PORT_B: 4})
    assert status == ANY_HIT, status
    assert got == {PORT_B: 4}, got        # B's rules, not A's and not "everything"
    assert counters.filtered > 0 and counters.lost == 0
    assert background.startswith("miss, stored"), background   # B's own programs, for next time
    assert len(cache.keys()) == 3

    # 3: B again: its own compiled programs
    status, background, got, _ = _run(cache, f"udp and dst port {PORT_B}", {PORT_B: 2})
    assert status == "hit" and background == "none", (status, background)
    assert got == {PORT_B: 2}

    # 4: yet another filter on the same any-filter set: the rules of run 2 are gone
    status, _, got, _ = _run(cache, f"udp and (dst port {PORT_C} or dst port {PORT_A})",
                             {PORT_A: 1, PORT_B: 3, PORT_C: 2})
    assert status == ANY_HIT, status
    assert got == {PORT_A: 1, PORT_C: 2}, got


def test_no_filter_and_a_filter_share_the_any_filter_set(cache):
    _run(cache, f"udp and dst port {PORT_A}", {})
    # no filter at all: the set keeps everything (filter_len 0)
    status, _, got, _ = _run(cache, "", {PORT_A: 1, PORT_C: 2})
    assert status == ANY_HIT, status
    assert got.get(PORT_A) == 1 and got.get(PORT_C) == 2
    # REQUIRE, NOT and port ranges through the run-time rules
    status, _, got, _ = _run(cache, f"udp and not dst port {PORT_C} and portrange {PORT_A}-{PORT_B}",
                             {PORT_A: 2, PORT_B: 1, PORT_C: 3})
    assert status == ANY_HIT, status
    assert got == {PORT_A: 2, PORT_B: 1}, got


def test_without_the_option_a_new_filter_loads_afresh(cache):
    for port in (PORT_A, PORT_B):
        with Tracer(TraceOptions(backend="tracepoint", rules=compile_filter(f"udp and dst port {port}"),
                                 cache=cache)) as tr:
            tr.start()
            assert tr.cache_status.startswith("miss, stored"), tr.cache_status
            assert tr.background_status == "none"
    assert len(cache.keys()) == 2


@pytest.mark.parametrize("backend", [
    pytest.param("kprobe", marks=pytest.mark.requires_kernel("kprobe")),
    pytest.param("fentry", marks=pytest.mark.requires_kernel("fentry")),
])
def test_the_any_filter_set_with_other_backends(cache, backend):
    status, background, _, _ = _run(cache, f"udp and dst port {PORT_A}", {}, backend)
    assert status.startswith("miss, stored") and background.startswith("miss, stored"), (status, background)
    status, background, got, _ = _run(cache, f"udp and dst port {PORT_B}", {PORT_A: 2, PORT_B: 1}, backend,
                                      settle=2.0)
    assert status == ANY_HIT, status
    assert got == {PORT_B: 1}, got
    assert background.startswith("miss, stored"), background


def test_a_second_netbee_with_a_new_filter_while_the_set_is_in_use(cache):
    _run(cache, f"udp and dst port {PORT_A}", {})       # own programs + the any-filter set
    first = Tracer(TraceOptions(backend="tracepoint", rules=compile_filter(f"udp and dst port {PORT_B}"),
                                cache=cache, any_filter_programs=True))
    with first:
        first.start()
        assert first.cache_status == ANY_HIT, first.cache_status
        # the set is this run's until it ends: another new filter loads its own programs
        status, background, got, _ = _run(cache, f"udp and dst port {PORT_C}", {PORT_B: 1, PORT_C: 2})
        assert status.startswith("miss, stored"), status
        assert background == "skipped (in use by another netbee)", background
        assert got == {PORT_C: 2}, got
        assert first.wait_background(600)
