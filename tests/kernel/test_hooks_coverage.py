"""Every hook a backend attaches really sees packets: mixed IPv4/IPv6 ICMP, TCP and UDP traffic
through a router, with the tracepoint backend here and kprobe/fentry in the QEMU guests."""
from __future__ import annotations

from collections import Counter

import pytest

from tests import netlab
from tests.kernel.test_tracer_lab import (
    KFREE_SKB, NF_BRACKET, NF_HOOK_SLOW, NF_NAMES, VERDICT_ACCEPT, in_namespaces, options_for, trace_during)

pytestmark = pytest.mark.kernel
NET = 232  # and 233: make_routed_hosts uses two /24s
ACCEPT_ALL = """table inet nbt_accept {
    chain c_pre { type filter hook prerouting priority 0; policy accept; }
    chain c_in { type filter hook input priority 0; policy accept; }
    chain c_fwd { type filter hook forward priority 0; policy accept; }
    chain c_out { type filter hook output priority 0; policy accept; }
    chain c_post { type filter hook postrouting priority 0; policy accept; }
}
"""


@pytest.fixture
def routed():
    topo = netlab.make_routed_hosts(NET)
    try:
        yield topo
    finally:
        for ns in topo.namespaces():
            ns.delete()


def traffic(t: netlab.RoutedHosts) -> None:
    # Generous timeouts: in an emulated guest, on shared cores, a Python listener can take seconds.
    netlab.ping(t.client, t.server_ip, count=1)
    netlab.ping(t.client, t.server_ip6, count=1)
    netlab.tcp_transfer(t.client, t.server, t.server_ip, 5001, 2000, timeout=60)
    netlab.tcp_transfer(t.client, t.server, t.server_ip6, 5002, 2000, timeout=60)
    netlab.udp_send(t.client, t.server_ip, 5003, open_port=True, dst_ns=t.server, timeout=30)
    netlab.udp_send(t.client, t.server_ip6, 5004, open_port=True, dst_ns=t.server, timeout=30)
    netlab.udp_send(t.client, t.server_ip, 5005, open_port=False, timeout=10)  # a drop: NO_SOCKET


@pytest.mark.parametrize("backend", [
    pytest.param("tracepoint", marks=pytest.mark.backend("tracepoint")),
    pytest.param("kprobe", marks=pytest.mark.requires_kernel("kprobe")),
    pytest.param("fentry", marks=pytest.mark.requires_kernel("fentry")),
])
def test_every_attached_hook_sees_traffic(routed, backend):
    # nf_hook_slow runs only where some netfilter hook is registered (kprobe/fentry); with the
    # tracepoint backend the chains sit inside the bracket and must not change what it sees.
    for ns in routed.namespaces():
        netlab.nft(ns, ACCEPT_ALL)
    events, counters, report = trace_during(options_for(routed.namespaces(), backend=backend),
                                            lambda: traffic(routed), settle=1.0)
    assert report.backend == backend
    ours = in_namespaces(events, routed.namespaces())
    seen = Counter(e.func for e in ours)
    print(f"{backend}: attached {report.attached}; skipped {report.skipped}; seen {dict(seen)}; "
          f"timings {({k: round(v, 3) for k, v in report.timings.items()})}")
    silent = [h for h in report.attached if not seen.get(h)]
    assert not silent, f"attached hooks that saw none of our packets: {silent}; seen: {dict(seen)}"
    nf = {(e.family, e.nf_hook) for e in ours
          if e.hook in (NF_BRACKET, NF_HOOK_SLOW) and e.verdict == VERDICT_ACCEPT}
    missing_nf = [(f, NF_NAMES[h]) for f in (4, 6) for h in range(5) if (f, h) not in nf]
    assert not missing_nf, f"netfilter hooks without an ACCEPT event: {missing_nf}"
    drops = [e for e in ours if e.hook == KFREE_SKB and e.proto == 17 and e.dport == 5005]
    assert drops, "the UDP datagram to a closed port was not reported as dropped"
    assert counters.lost == 0
