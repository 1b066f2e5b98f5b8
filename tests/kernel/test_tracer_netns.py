"""The tracer following network namespaces: links released when a namespace goes, new ones picked up."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from netbee.tracer import TraceOptions, Tracer
from tests import netlab
from tests.kernel.test_tracer_lab import options_for

pytestmark = [pytest.mark.kernel, pytest.mark.backend("tracepoint")]
LINKS_PER_NS = 2 * 5 * 2  # (IPv4, IPv6) x five hooks x (entry, exit)


def has_link(ns: netlab.Netns, ifname: str) -> bool:
    return ns.run(["ip", "link", "show", ifname], check=False).returncode == 0


def test_deleted_namespace_links_are_closed_and_the_namespace_dies():
    a = netlab.Netns(netlab.unique_name("gone")).create()
    b = netlab.Netns(netlab.unique_name("peer")).create()
    try:
        netlab.veth_pair(a, b, "10.236.1.1/24", "10.236.1.2/24", name_a="veth-a", name_b="veth-b")
        with Tracer(options_for([a, b])) as tr:
            tr.start()
            ino = a.inode()
            assert tr.netns_links() == {ino: LINKS_PER_NS, b.inode(): LINKS_PER_NS}
            a.delete()
            # Control: our links alone keep the deleted namespace (and so its veth end) alive.
            time.sleep(0.6)
            assert has_link(b, "veth-b"), "namespace died although the tracer still held links"
            deadline = time.monotonic() + 10
            while has_link(b, "veth-b"):
                list(tr.events(timeout=0.1))  # the event loop polls the namespace watcher
                assert time.monotonic() < deadline, "veth peer still there 10 s after the namespace was deleted"
            assert tr.netns_links() == {b.inode(): LINKS_PER_NS}
            assert all(str(ino) not in n for n in tr.report.netns)
    finally:
        a.delete()
        b.delete()


def test_namespace_of_a_process_path_is_released_when_the_process_exits():
    peer = netlab.Netns(netlab.unique_name("ppeer")).create()
    proc = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        path = f"/proc/{proc.pid}/ns/net"
        deadline = time.monotonic() + 5
        while os.stat(path).st_ino == os.stat("/proc/self/ns/net").st_ino:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # Move one veth end into the process's namespace (by pid), keep the peer in ours.
        peer.run(["ip", "link", "add", "veth-p", "type", "veth", "peer", "name", "veth-q",
                  "netns", str(proc.pid)])
        with Tracer(TraceOptions(backend="tracepoint", netns=[path])) as tr:
            tr.start()
            assert list(tr.netns_links().values()) == [LINKS_PER_NS]
            proc.kill()
            proc.wait()
            deadline = time.monotonic() + 10
            while has_link(peer, "veth-p"):
                list(tr.events(timeout=0.1))
                assert time.monotonic() < deadline, "process namespace kept alive after the process exited"
            assert tr.netns_links() == {}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        peer.delete()


CHILD = textwrap.dedent("""
    import json, subprocess, sys, time
    from netbee.tracer import TraceOptions, Tracer
    name = sys.argv[1]
    out = {}
    with Tracer(TraceOptions(backend="tracepoint", netns=["all"])) as tr:
        rep = tr.start()
        out["start"] = list(tr.netns_links().values())
        subprocess.run(["ip", "netns", "add", name], check=True)
        deadline = time.monotonic() + 5
        while len(tr.netns_links()) < 2 and time.monotonic() < deadline:
            list(tr.events(timeout=0.1))
        out["added"] = sorted(tr.netns_links().values())
        out["netns"] = list(rep.netns)
        subprocess.run(["ip", "netns", "del", name], check=True)
        deadline = time.monotonic() + 5
        while len(tr.netns_links()) > 1 and time.monotonic() < deadline:
            list(tr.events(timeout=0.1))
        out["removed"] = list(tr.netns_links().values())
    print(json.dumps(out))
""")


def test_all_picks_up_new_namespaces_and_drops_deleted_ones():
    # `all` means every namespace on the machine; to stay inside namespaces this test owns it runs
    # in a fresh net + pid + mount namespace with its own /run/netns, so `all` sees only ours.
    name = netlab.unique_name("new")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = ("mkdir -p /run/netns && mount -t tmpfs nbt-runns /run/netns && "
              f"exec {sys.executable} -c \"$0\" {name}")
    res = subprocess.run(["unshare", "--net", "--pid", "--mount", "--fork", "--mount-proc",
                          "sh", "-c", script, CHILD], capture_output=True, text=True, timeout=60,
                         cwd=root, env=dict(os.environ, PYTHONPATH=root))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["start"] == [LINKS_PER_NS]
    assert out["added"] == [LINKS_PER_NS, LINKS_PER_NS], out
    assert any(name in n for n in out["netns"]), out
    assert out["removed"] == [LINKS_PER_NS], out
