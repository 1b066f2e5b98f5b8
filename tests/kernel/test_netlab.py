"""The namespace topologies and traffic generators really move (or refuse) packets."""
from __future__ import annotations

import os

import pytest

from tests import netlab

pytestmark = pytest.mark.kernel


def test_two_hosts_ping_v4_v6(two_hosts: netlab.TwoHosts) -> None:
    assert netlab.ping(two_hosts.client, two_hosts.server_ip, count=2, interval=0.05).received == 2
    assert netlab.ping(two_hosts.client, two_hosts.server_ip6, count=2, interval=0.05).received == 2
    assert two_hosts.client_ifindex > 0 and two_hosts.server_ifindex > 0


def test_two_hosts_addresses_exist_only_inside(two_hosts: netlab.TwoHosts) -> None:
    host_addrs = netlab._host("ip -o addr show").stdout
    assert two_hosts.server_ip not in host_addrs
    inside = two_hosts.server.run("ip -o addr show").stdout
    assert f"{two_hosts.server_ip}/24" in inside and f"{two_hosts.server_ip6}/64" in inside
    assert "tentative" not in inside  # nodad


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_tcp_transfer_and_refused(two_hosts: netlab.TwoHosts, family: str) -> None:
    dst = two_hosts.server_ip if family == "v4" else two_hosts.server_ip6
    assert netlab.tcp_transfer(two_hosts.client, two_hosts.server, dst, 5201, 300_000) == 300_000
    assert netlab.tcp_connect(two_hosts.client, dst, 5202) == "refused"


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_udp_open_and_closed(two_hosts: netlab.TwoHosts, family: str) -> None:
    dst = two_hosts.server_ip if family == "v4" else two_hosts.server_ip6
    assert netlab.udp_send(two_hosts.client, dst, 5301, open_port=True) == "delivered"
    assert netlab.udp_send(two_hosts.client, dst, 5302, open_port=False) == "refused"


def test_routed_hosts_forward(routed_hosts: netlab.RoutedHosts) -> None:
    r = routed_hosts
    netlab.ping(r.client, r.server_ip, count=1)
    netlab.ping(r.client, r.server_ip6, count=1)
    assert netlab.tcp_transfer(r.client, r.server, r.server_ip, 5401, 100_000) == 100_000
    assert r.router.run("sysctl -n net.ipv4.ip_forward").stdout.strip() == "1"


def test_nft_drop_rule_blocks_ping(two_hosts: netlab.TwoHosts) -> None:
    netlab.nft(two_hosts.server, """
table inet nbh {
    chain input_filter {
        type filter hook input priority 0;
        icmp type echo-request drop
    }
}
""")
    netlab.ping(two_hosts.client, two_hosts.server_ip, count=1, timeout=0.5, expect_reply=False)
    netlab.ping(two_hosts.client, two_hosts.server_ip6, count=1)


@pytest.mark.parametrize("legacy", [False, True])
def test_iptables_drop_rule_blocks_udp(two_hosts: netlab.TwoHosts, legacy: bool) -> None:
    netlab.iptables(two_hosts.server, "-A INPUT -p udp --dport 5501 -j DROP", legacy=legacy)
    with pytest.raises(netlab.NetlabError):
        netlab.udp_send(two_hosts.client, two_hosts.server_ip, 5501, open_port=True, timeout=0.5)
    netlab.ip6tables(two_hosts.server, "-A INPUT -p udp --dport 5501 -j DROP", legacy=legacy)
    with pytest.raises(netlab.NetlabError):
        netlab.udp_send(two_hosts.client, two_hosts.server_ip6, 5501, open_port=True, timeout=0.5)


def test_namespaces_removed_after_context() -> None:
    with netlab.Netns(netlab.unique_name("ctx")) as ns:
        path = ns.path
        assert path.exists()
        proc = ns.popen("sleep 30")
    assert not path.exists()
    assert proc.poll() is not None


def test_failure_inside_topology_still_cleans_up() -> None:
    names = []
    with pytest.raises(netlab.NetlabError):
        topo = netlab.make_two_hosts(net=210)
        names = [ns.name for ns in topo.namespaces()]
        try:
            topo.client.run("false")
        finally:
            for ns in topo.namespaces():
                ns.delete()
    assert names and not any(os.path.exists(f"/run/netns/{n}") for n in names)


def test_sweep_removes_leftovers_of_dead_sessions() -> None:
    # A namespace named like one of a finished session (pid that no longer exists) is swept.
    dead_pid = 4_000_000  # above pid_max's default ceiling, so never alive
    name = f"{netlab.PREFIX}{dead_pid}-1-left"
    netlab._host(["ip", "netns", "add", name])
    try:
        assert name in netlab.sweep()
    finally:
        netlab._host(["ip", "netns", "del", name], check=False)
    assert not os.path.exists(f"/run/netns/{name}")
