"""Backend choice, and the ICMP echo path with the kprobe and fentry backends (QEMU guests 6.1, 6.12).

With kprobe/fentry, netfilter verdicts come from nf_hook_slow, which the kernel calls only where a
hook is registered: each namespace gets an accept-everything nftables table so that every
netfilter hook runs. Kernels rename and inline functions; netbee/hooks.py's candidates and the
tracer's resolution handle that, so the expected path names hooks, not kernel symbols.
"""
from __future__ import annotations

import pytest

from netbee.loader import features
from netbee.loader.errors import NotSupportedError
from netbee.tracer import Tracer
from tests import netlab
from tests.kernel.test_tracer_lab import (
    DEV_QUEUE_XMIT, ICMP_RCV, IP_LOCAL_DELIVER, IP_OUTPUT, IP_RCV, NET_DEV_START_XMIT, NETIF_RECEIVE_SKB,
    ECHO_ID4, KFREE_SKB, NF_LOCAL_IN, NF_LOCAL_OUT, NF_POST_ROUTING, NF_PRE_ROUTING, VERDICT_ACCEPT,
    assert_subsequence, both, echo_expectation, field_errors, hook_is, in_namespaces, in_ns, nf_is, options_for,
    ping_with_id, trace_during)

pytestmark = pytest.mark.kernel
NET = 235
ACCEPT_ALL = """table inet nbt_accept {
    chain pre { type filter hook prerouting priority 0; policy accept; }
    chain in { type filter hook input priority 0; policy accept; }
    chain out { type filter hook output priority 0; policy accept; }
    chain post { type filter hook postrouting priority 0; policy accept; }
}
"""


@pytest.fixture(scope="module")
def hosts():
    # One lab for the module: in the emulated guests every namespace set-up costs seconds.
    topo = netlab.make_two_hosts(NET)
    try:
        for ns in topo.namespaces():
            netlab.nft(ns, ACCEPT_ALL)
        yield topo
    finally:
        for ns in topo.namespaces():
            ns.delete()


def path(src, dst):
    a = VERDICT_ACCEPT
    return [
        ("src LOCAL_OUT", both(in_ns(src), nf_is(NF_LOCAL_OUT, a))),
        ("src ip_output", both(in_ns(src), hook_is(IP_OUTPUT))),
        ("src POST_ROUTING", both(in_ns(src), nf_is(NF_POST_ROUTING, a))),
        ("src dev_queue_xmit", both(in_ns(src), hook_is(DEV_QUEUE_XMIT))),
        ("src net_dev_start_xmit", both(in_ns(src), hook_is(NET_DEV_START_XMIT))),
        ("dst netif_receive_skb", both(in_ns(dst), hook_is(NETIF_RECEIVE_SKB))),
        ("dst ip_rcv", both(in_ns(dst), hook_is(IP_RCV))),
        ("dst PRE_ROUTING", both(in_ns(dst), nf_is(NF_PRE_ROUTING, a))),
        ("dst ip_local_deliver", both(in_ns(dst), hook_is(IP_LOCAL_DELIVER))),
        ("dst LOCAL_IN", both(in_ns(dst), nf_is(NF_LOCAL_IN, a))),
        ("dst icmp_rcv", both(in_ns(dst), hook_is(ICMP_RCV))),
    ]


@pytest.fixture(scope="module")
def echo_trace(hosts):
    """One traced ping per backend, shared by the tests that inspect it: a tracer start costs
    ~30 s in the emulated guests."""
    done = {}

    def get(backend):
        if backend not in done:
            done[backend] = trace_during(
                options_for(hosts.namespaces(), backend=backend, expression="icmp"),
                lambda: ping_with_id(hosts.client, hosts.server_ip, ECHO_ID4), settle=1.0)
        return done[backend]
    return get


@pytest.mark.parametrize("backend", [
    pytest.param("kprobe", marks=pytest.mark.requires_kernel("kprobe")),
    pytest.param("fentry", marks=pytest.mark.requires_kernel("fentry")),
])
def test_icmp_echo_order(hosts, echo_trace, backend):
    events, counters, report = echo_trace(backend)
    assert report.backend == backend
    for hook in ("ip_rcv", "ip_local_deliver", "icmp_rcv", "dev_queue_xmit", "nf_hook_slow", "kfree_skb"):
        assert hook in report.attached, report
    ours = in_namespaces(events, hosts.namespaces())
    # The kernel filter keeps ICMP only. Request and reply are told apart by time (the reply is
    # built inside the server's icmp_rcv), not by fields a broken parser could get wrong: the path
    # is found by namespace and hook, then what each hook read from the packet is checked, so a
    # wrong header offset in any hook's parser fails with that hook and field named.
    echo = [e for e in ours if e.family == 4 and e.hook != KFREE_SKB]
    req = assert_subsequence(echo, path(hosts.client, hosts.server), f"{backend} request")
    after = next(i for i, e in enumerate(echo) if e is req[-1]) + 1
    rep = assert_subsequence(echo[after:], path(hosts.server, hosts.client), f"{backend} reply")
    want_req = echo_expectation(4, hosts.client_ip, hosts.server_ip, True, ECHO_ID4)
    want_rep = echo_expectation(4, hosts.server_ip, hosts.client_ip, False, ECHO_ID4)
    wrong = ([err for e in req for err in field_errors(e, want_req, f"{backend} request")]
             + [err for e in rep for err in field_errors(e, want_rep, f"{backend} reply")])
    assert not wrong, "\n".join(wrong)
    assert counters.lost == 0


@pytest.mark.requires_kernel("fentry")
def test_auto_prefers_fentry(hosts):
    with Tracer(options_for(hosts.namespaces(), backend="auto")) as tr:
        assert tr.start().backend == "fentry"


@pytest.mark.requires_kernel("kprobe")
def test_kprobe_backend_reports_symbols_it_cannot_find(echo_trace):
    report = echo_trace("kprobe")[2]
    assert report.backend == "kprobe"
    # tcp_transmit_skb is inlined on some kernels and __tcp_transmit_skb is tried first; whichever
    # is missing, every hook is either attached or skipped with a reason, never silently absent.
    from netbee import hooks
    names = {h.func for h in hooks.hooks_for("kprobe")}
    assert names == set(report.attached) | {h for h, _ in report.skipped}, report
    assert all(why for _, why in report.skipped)


def test_auto_falls_back_to_tracepoint_here(hosts):
    if features.has("fentry")[0] or features.has("kprobe")[0]:
        pytest.fail("this test describes the CI host (no fentry, no kprobes); its kernel changed")
    with Tracer(options_for([hosts.server], backend="auto")) as tr:
        assert tr.start().backend == "tracepoint"


@pytest.mark.parametrize("backend", ["kprobe", "fentry"])
def test_forcing_a_missing_backend_is_not_supported(hosts, backend):
    if features.has(backend)[0]:
        pytest.fail(f"this test describes the CI host, which has no {backend}")
    with pytest.raises(NotSupportedError, match=backend):
        Tracer(options_for([hosts.server], backend=backend)).start()
