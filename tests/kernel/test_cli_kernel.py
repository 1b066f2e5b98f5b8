"""The netbee command end to end: every option with real traffic between namespaces of our own.

netbee runs as a subprocess (python -m netbee) with --json; readiness is its `netbee: tracing`
line on stderr (no sleeps before traffic); it is stopped with SIGTERM and must print a summary.
Every run is confined with --netns to the namespaces the test created: other sessions trace and
send traffic on this machine at the same time.
"""
from __future__ import annotations

import ipaddress
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import zlib
from typing import Dict, List, Optional, Sequence

import pytest

from tests import netlab

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = [pytest.mark.kernel, pytest.mark.backend("tracepoint")]
# Python runs ~15x slower inside the QEMU (TCG) guests of tests/vm: stretch every wait there.
SLOW = 15.0 if os.environ.get("NETBEE_IN_VM") == "1" else 1.0


class NetbeeRun:
    """`python -m netbee ARGS` in the background; events() after stop() gives parsed JSON lines."""

    def __init__(self, *args: str, ready_timeout: float = 60.0 * SLOW, json_out: bool = True,
                 python_args: Sequence[str] = ("-m", "netbee")) -> None:
        argv = [sys.executable, *python_args] + (["--json"] if json_out else []) + list(args)
        self.argv = argv
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.pre_lines: List[str] = []  # stderr lines before the `tracing` line
        self._stderr_head = ""
        self.stdout = ""
        self.start_line = self._wait_ready(ready_timeout)
        self.stderr_rest = ""

    def _wait_ready(self, timeout: float) -> str:
        # Raw os.read on the descriptors throughout: a buffered readline() after select() could
        # keep lines in Python's buffer while select() waits for more bytes.
        fd = self.proc.stderr.fileno()  # type: ignore[union-attr]
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        seen = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and sel.select(max(0.0, deadline - time.monotonic())):
            chunk = os.read(fd, 65536)
            if not chunk:
                self.proc.wait(timeout=10)
                raise AssertionError(f"netbee exited {self.proc.returncode} before tracing: "
                                     f"{seen.decode(errors='replace')}")
            seen += chunk
            lines = seen.decode(errors="replace").split("\n")
            for i, line in enumerate(lines[:-1]):
                if line.startswith("netbee: tracing"):
                    self.pre_lines = lines[:i]
                    self._stderr_head = "\n".join(lines[i + 1:])
                    return line
        self.proc.kill()
        self.proc.wait()
        raise AssertionError(f"netbee not ready after {timeout}s: {seen.decode(errors='replace')}")

    def read_until(self, until, timeout: float = 15.0 * SLOW) -> bool:
        """Read JSON lines as they come until until(events so far) holds (or timeout)."""
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while not until(self.events()):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                return False
            chunk = os.read(fd, 65536)
            if not chunk:
                return False
            self.stdout += chunk.decode(errors="replace")
        return True

    def stop(self, settle: float = 0.5, until=None) -> "NetbeeRun":
        if until is not None:
            self.read_until(until)
        else:
            time.sleep(settle * SLOW)  # events of the last packets may still be in the ring buffer
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait()

    def wait(self, timeout: float = 30.0 * SLOW) -> "NetbeeRun":
        # Read through the file objects (not communicate(), which bypasses what readline()
        # already buffered); a timer kills a netbee that does not exit.
        timer = threading.Timer(timeout, self.proc.kill)
        timer.start()
        try:
            self.stdout += self.proc.stdout.read()  # type: ignore[union-attr]
            self.stderr_rest = self._stderr_head + self.proc.stderr.read()  # type: ignore[union-attr]
            self.proc.wait()
        finally:
            timer.cancel()
        assert self.proc.returncode != -signal.SIGKILL, f"netbee did not exit: {self.stderr_rest}"
        return self

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()

    def events(self) -> List[Dict]:
        """Complete lines only: a read may end in the middle of one."""
        done = self.stdout[:self.stdout.rfind("\n") + 1]
        return [json.loads(line) for line in done.splitlines() if line.strip()]

    def summary(self) -> str:
        lines = [x for x in self.stderr_rest.splitlines() if x.startswith("netbee: ")]
        assert lines and " events shown, " in lines[-1], self.stderr_rest
        return lines[-1]


def netbee(*args: str, **kw: object) -> NetbeeRun:
    return NetbeeRun(*args, **kw)  # type: ignore[arg-type]


def traced(topo: netlab.TwoHosts, *args: str, action=None, until=None,
           **kw: object) -> NetbeeRun:
    """Run netbee confined to the topology's namespaces around `action()`; always stopped.
    until(events): stop as soon as it holds (else after a short settle time)."""
    run = netbee("--netns", topo.client.name, "--netns", topo.server.name, *args, **kw)
    try:
        if action is not None:
            action()
        run.stop(until=until)
    finally:
        run.kill()
    assert run.proc.returncode == 0, run.stderr_rest
    run.summary()
    return run


def addrs(events: List[Dict]) -> set:
    return {(e["saddr"], e["daddr"]) for e in events}


# ----------------------------------------------------------------------------- options

def test_protocol_and_host_with_lifecycle(two_hosts):
    t = two_hosts

    def traffic():
        netlab.ping(t.client, t.server_ip, count=2, interval=0.1)
        netlab.udp_send(t.client, t.server_ip, 5353, open_port=True, dst_ns=t.server)

    run = traced(t, "-p", "icmp", "-H", t.server_ip, action=traffic)
    assert run.start_line.startswith("netbee: tracing with the ") and "attached: " in run.start_line
    evs = run.events()
    assert evs, run.stderr_rest
    assert {e["proto"] for e in evs} == {"icmp"}
    assert all(t.server_ip in (e["saddr"], e["daddr"]) for e in evs)
    assert {e["icmp_type"] for e in evs} == {"echo request", "echo reply"}
    summary = run.summary()
    assert summary.startswith(f"netbee: {len(evs)} events shown, ") and "per hook: " in summary
    for e in evs:
        assert set(e) == set(json.loads(json.dumps(e)))  # plain JSON
        assert e["netns"] in (t.client.inode(), t.server.inode())


def test_protocol_list_icmp6_and_udp(two_hosts):
    t = two_hosts

    def traffic():
        netlab.ping(t.client, t.server_ip6, count=1)
        netlab.udp_send(t.client, t.server_ip, 5353, open_port=True, dst_ns=t.server)
        netlab.ping(t.client, t.server_ip, count=1)

    evs = traced(t, "-p", "icmp6,udp", action=traffic).events()
    protos = {e["proto"] for e in evs}
    assert protos == {"icmp6", "udp"}, protos
    assert any(e["icmp_type"] == "echo request" and e["daddr"] == t.server_ip6 for e in evs)
    assert any(e["dport"] == 5353 for e in evs if e["proto"] == "udp")


def test_src_and_dst_host(two_hosts):
    t = two_hosts
    evs = traced(t, "--src-host", t.client_ip, "--dst-host", t.server_ip, "-p", "icmp",
                 action=lambda: netlab.ping(t.client, t.server_ip, count=2, interval=0.1)).events()
    assert evs and addrs(evs) == {(t.client_ip, t.server_ip)}
    assert {e["icmp_type"] for e in evs} == {"echo request"}
    evs = traced(t, "-H", "10.201.1.0/24", "-p", "icmp",
                 action=lambda: netlab.ping(t.client, t.server_ip, count=1)).events()
    assert addrs(evs) == {(t.client_ip, t.server_ip), (t.server_ip, t.client_ip)}


def test_ports(two_hosts):
    t = two_hosts

    def traffic():
        netlab.tcp_transfer(t.client, t.server, t.server_ip, 5201, 2000)
        netlab.udp_send(t.client, t.server_ip, 5353, open_port=True, dst_ns=t.server)

    evs = traced(t, "-P", "5201", action=traffic).events()
    assert evs and {e["proto"] for e in evs} == {"tcp"}
    assert all(5201 in (e["sport"], e["dport"]) for e in evs)
    flags = {e["tcp_flags"] for e in evs}
    assert "S" in flags and "S." in flags, flags  # the handshake is there
    evs = traced(t, "--dst-port", "5000-5300", action=traffic).events()
    assert {e["dport"] for e in evs} == {5201}
    evs = traced(t, "--src-port", "5201", action=traffic).events()
    assert evs and {e["sport"] for e in evs} == {5201} and {e["proto"] for e in evs} == {"tcp"}
    evs = traced(t, "--dst-port", "5353", action=traffic).events()
    assert evs and {(e["proto"], e["dport"]) for e in evs} == {("udp", 5353)}


def test_expression_combined_with_options(two_hosts):
    t = two_hosts

    def traffic():
        netlab.ping(t.client, t.server_ip, count=1)
        netlab.ping(t.client, t.server_ip6, count=1)
        netlab.udp_send(t.client, t.server_ip, 5353, open_port=True, dst_ns=t.server)

    evs = traced(t, "-p", "icmp,icmp6,udp", "not", "udp", "and", "(", "dst", "host",
                 t.server_ip6, "or", "src", "host", t.server_ip, ")", action=traffic).events()
    assert evs
    assert addrs(evs) == {(t.client_ip6, t.server_ip6), (t.server_ip, t.client_ip)}


def test_interface_and_netns(two_hosts):
    t = two_hosts
    run = netbee("--netns", t.server.name, "-i", t.server_if, "-p", "icmp")
    try:
        netlab.ping(t.client, t.server_ip, count=1)
        run.stop()
    finally:
        run.kill()
    evs = run.events()
    assert evs
    assert {e["ifindex"] for e in evs} == {t.server_ifindex}
    assert {e["iface"] for e in evs} == {t.server_if}
    assert {e["netns"] for e in evs} == {t.server.inode()}
    run = netbee("--netns", t.client.name, "-p", "icmp")
    try:
        netlab.ping(t.client, t.server_ip, count=1)
        run.stop()
    finally:
        run.kill()
    evs = run.events()
    assert evs and {e["netns"] for e in evs} == {t.client.inode()}
    assert {e["iface"] for e in evs if e["ifindex"]} <= {t.client_if, "lo"}


def test_count_stops_by_itself(two_hosts):
    t = two_hosts
    run = netbee("--netns", t.server.name, "-p", "icmp", "-c", "3")
    try:
        netlab.ping(t.client, t.server_ip, count=3, interval=0.1)
        run.wait(timeout=30)
    finally:
        run.kill()
    assert run.proc.returncode == 0
    assert len(run.events()) == 3
    assert run.summary().startswith("netbee: 3 events shown, ")


def test_table_output_and_verbose(two_hosts):
    t = two_hosts
    run = netbee("--netns", t.server.name, "-p", "icmp", "-v", json_out=False)
    try:
        netlab.ping(t.client, t.server_ip, count=1)
        run.stop()
    finally:
        run.kill()
    lines = run.stdout.splitlines()
    assert lines[0].split()[:5] == ["TIME", "IFACE", "HOOK", "PROTO", "FLOW"]
    assert any(f"{t.client_ip} > {t.server_ip}" in x and "echo request" in x for x in lines)
    assert "\x1b[" not in run.stdout  # not a terminal: no colour
    assert any(x.startswith("netbee: filter program (5 rules)") for x in run.pre_lines), run.pre_lines
    assert run.summary().startswith("netbee: ")


def test_drop_reason_stack_and_netfilter(two_hosts):
    t = two_hosts
    netlab.nft(t.server, "table inet nbtest {\n chain input {\n"
                         "  type filter hook input priority 0;\n  udp dport 7777 drop\n }\n}\n")

    def traffic():  # the datagram is dropped by the rule: no listener, no ICMP error
        t.client.run([sys.executable, "-c", "import socket,sys; socket.socket(socket.AF_INET, "
                      "socket.SOCK_DGRAM).sendto(b'x' * 8, (sys.argv[1], 7777))", t.server_ip])

    evs = traced(t, "--stack", "-p", "udp", "--dst-port", "7777", action=traffic,
                 until=lambda evs: any(e["func"] == "kfree_skb" for e in evs)).events()
    drops = [e for e in evs if e["drop_reason"] and e["func"] == "kfree_skb"]
    assert drops, evs
    d = drops[0]
    assert d["drop_reason"] == "NETFILTER_DROP", d
    assert d["stack"] and all(isinstance(f, str) for f in d["stack"]), d
    assert any(f.split("+")[0] in ("nft_do_chain", "nf_hook_slow", "sk_skb_reason_drop",
                                   "kfree_skb_reason") for f in d["stack"]), d["stack"]
    nf = [e for e in evs if e["nf_hook"] == "LOCAL_IN"]
    assert nf and any(e["verdict"] == "DROP" for e in nf), [(e["func"], e["nf_hook"], e["verdict"]) for e in evs]
    assert all(e["stack"] is None for e in evs if not e["drop_reason"])


def test_oui_db_vendor(two_hosts, tmp_path):
    t = two_hosts
    t.client.run(["ip", "link", "set", t.client_if, "address", "00:1b:21:00:00:01"])
    t.server.run(["ip", "neigh", "flush", "all"])
    db = tmp_path / "oui.db"
    db.write_bytes(zlib.compress(b"001B21\tNetBee Test Vendor\n"))
    evs = traced(t, "--oui-db", str(db), "-p", "icmp", "--netns", t.server.name,
                 action=lambda: netlab.ping(t.client, t.server_ip, count=1)).events()
    l2 = [e for e in evs if e["smac"] == "00:1b:21:00:00:01"]
    assert l2 and {e["smac_vendor"] for e in l2} == {"NetBee Test Vendor"}
    assert any(e["dmac_vendor"] == "locally administered" for e in l2)


def test_btf_and_ringbuf_size_and_backend(two_hosts):
    t = two_hosts
    run = traced(t, "--btf", "/sys/kernel/btf/vmlinux", "--ringbuf-size", "64K",
                 "--backend", "tracepoint", "-p", "icmp",
                 action=lambda: netlab.ping(t.client, t.server_ip, count=1))
    assert "the tracepoint backend" in run.start_line
    assert run.events()


def test_fentry_refused_here_is_one_line():
    res = subprocess.run([sys.executable, "-m", "netbee", "--backend", "fentry", "-c", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith("netbee: ") and "fentry" in res.stderr


@pytest.mark.requires_kernel("kprobe")
@pytest.mark.backend("kprobe")
def test_kprobe_backend(two_hosts):
    t = two_hosts
    run = traced(t, "--backend", "kprobe", "-p", "icmp",
                 action=lambda: netlab.ping(t.client, t.server_ip, count=1, timeout=2 * SLOW),
                 until=lambda evs: {"echo request", "echo reply"} <= {e["icmp_type"] for e in evs})
    assert "the kprobe backend" in run.start_line
    assert {e["icmp_type"] for e in run.events()} >= {"echo request", "echo reply"}


def test_unknown_interface_in_namespace(two_hosts):
    res = subprocess.run([sys.executable, "-m", "netbee", "--netns", two_hosts.server.name,
                          "-i", "nosuch0"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr == f"netbee: no interface 'nosuch0' in network namespace {two_hosts.server.name}\n"


def test_probe_and_version():
    res = subprocess.run([sys.executable, "-m", "netbee", "--probe"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "ringbuf" in res.stdout and "netfilter" in res.stdout


def test_control_characters_from_the_kernel_are_escaped(two_hosts):
    """A sender whose comm holds ESC, and an interface whose name holds ESC: neither reaches the
    terminal raw, in the table or in JSON."""
    t = two_hosts
    evil_if = "ev\x1b[7mil"
    t.server.run(["ip", "link", "add", "name", evil_if, "type", "veth", "peer", "name", "plain",
                  "netns", t.client.name])
    t.server.run(["ip", "addr", "add", "10.201.9.1/24", "dev", evil_if])
    t.server.run(["ip", "link", "set", evil_if, "up"])
    t.client.run(["ip", "addr", "add", "10.201.9.2/24", "dev", "plain"])
    t.client.run(["ip", "link", "set", "plain", "up"])
    sender = ("import ctypes, socket, sys\n"
              "ctypes.CDLL(None).prctl(15, b'x\\x1b[31mred', 0, 0, 0)\n"
              "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
              "s.sendto(b'x', (sys.argv[1], 4444))\n")

    def traffic():
        t.client.run([sys.executable, "-c", sender, t.server_ip])
        t.server.run([sys.executable, "-c", sender, "10.201.9.2"])  # leaves through evil_if

    for json_out in (True, False):
        run = netbee("--netns", t.client.name, "--netns", t.server.name, "-P", "4444",
                     json_out=json_out)
        try:
            traffic()
            run.stop(settle=1.0)
        finally:
            run.kill()
        assert "\x1b" not in run.stdout
        if json_out:
            evs = run.events()
            assert "x\\x1b[31mred" in {e["comm"] for e in evs}
            assert "ev\\x1b[7mil" in {e["iface"] for e in evs}
        else:
            assert "x\\x1b[31mred" in run.stdout and "ev\\x1b[7mil" in run.stdout, run.stdout
