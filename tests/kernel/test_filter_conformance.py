"""Filter conformance: at the device hooks, netbee reports exactly the packets tcpdump captures
on the same interface with the same expression (mixed ICMP/TCP/UDP, IPv4 and IPv6 traffic).

Both run at once on the server's veth; netbee confined with --netns/-i. netbee's filter runs as
the code generated from the rules (the default); some expressions also run with the object's C
interpreter (TraceOptions.filter_interpreter) and with rules written at run time
(TraceOptions.filter_dynamic). Packets are compared as
multisets of (saddr, daddr, proto, sport, dport, icmp type) restricted to our own test prefixes,
so IPv6 link-local/multicast housekeeping that may fall outside one tool's window cannot decide
the outcome; the selection among our own mixed packets does.
"""
from __future__ import annotations

import collections
import ipaddress
import os
import re
import selectors
import signal
import subprocess
import time

import pytest

from tests import netlab
from tests.kernel.test_cli_kernel import NetbeeRun

pytestmark = [pytest.mark.kernel, pytest.mark.backend("tracepoint")]

# Device-level hooks: where tcpdump's taps sit (receive: netif_receive_skb; transmit: the
# driver handoff). One hook per direction, so each packet counts once.
RX_FUNCS = ("netif_receive_skb",)
TX_FUNCS = ("net_dev_start_xmit", "net_dev_queue", "dev_queue_xmit", "__dev_queue_xmit")

EXPRESSIONS = [
    "icmp", "icmp6", "tcp", "udp", "ip", "ip6", "port 5201", "udp and port 5353",
    "host 10.201.1.1", "src host fd00:201::1", "dst net 10.201.1.0/24", "not tcp",
    "tcp or udp and not port 5353", "icmp or icmp6 and host fd00:201::2",
    "portrange 5000-5300", "ip proto 6 or ip6 proto 17",
]
# `python -c` program: the netbee command with TraceOptions.OPTION on (the filter interpreter
# instead of generated code, or the interpreter of rules written at run time)
VARIANT_MAIN = """
import sys
import netbee.tracer as tracer
init = tracer.Tracer.__init__
def with_option(self, opts=None, **kw):
    init(self, (opts or tracer.TraceOptions()).replace(OPTION=True), **kw)
    print("filter: OPTION", file=sys.stderr, flush=True)
tracer.Tracer.__init__ = with_option
from netbee.cli import main
sys.exit(main())
"""
VARIANT_OPTION = {"interpreter": "filter_interpreter", "dynamic": "filter_dynamic"}
VARIANTS = [pytest.param(e, "generated", id=e) for e in EXPRESSIONS] + [
    pytest.param("tcp or udp and not port 5353", "interpreter", id="interpreter-tcp or udp and not port 5353"),
    pytest.param("tcp or udp and not port 5353", "dynamic", id="dynamic-tcp or udp and not port 5353"),
    pytest.param("icmp or icmp6 and host fd00:201::2", "dynamic", id="dynamic-icmp or icmp6 and host fd00:201::2"),
    pytest.param("portrange 5000-5300", "dynamic", id="dynamic-portrange 5000-5300")]
OURS = [ipaddress.ip_network("10.201.1.0/24"), ipaddress.ip_network("fd00:201::/64")]
ICMP_TYPES = {"echo request": (8, 128), "echo reply": (0, 129)}
TCPDUMP_LINE = re.compile(
    r"^(?:IP6?) (?P<src>\S+) > (?P<dst>\S+?):? (?P<rest>.*)$")


def ours(a: str) -> bool:
    ip = ipaddress.ip_address(a)
    return any(ip in n for n in OURS)


def split_hostport(text: str, v6: bool):
    # tcpdump -n prints 10.0.0.1.5201 and fd00::1.5201 (port after the last dot)
    if v6:
        head, _, tail = text.rpartition(".")
        if tail.isdigit() and head and ":" in head:
            return head, int(tail)
        return text, None
    parts = text.split(".")
    if len(parts) == 5:
        return ".".join(parts[:4]), int(parts[4])
    return text, None


def parse_tcpdump(out: str):
    keys = []
    for line in out.splitlines():
        m = TCPDUMP_LINE.match(line.split(" ", 1)[1] if line[:1].isdigit() else line)
        if not m:
            continue
        v6 = line.split(" ", 2)[1] == "IP6" if line[:1].isdigit() else line.startswith("IP6")
        src, sport = split_hostport(m.group("src"), v6)
        dst, dport = split_hostport(m.group("dst"), v6)
        rest = m.group("rest")
        if rest.startswith("tcp"):
            proto = "tcp"
        elif rest.startswith("UDP"):
            proto = "udp"
        elif rest.startswith("ICMP6"):
            proto = "icmp6"
        elif rest.startswith("ICMP"):
            proto = "icmp"
        else:
            proto = "other"
        icmp = None
        for name in ("echo request", "echo reply"):
            if name in rest:
                icmp = name
        if proto not in ("tcp", "udp"):
            sport = dport = None
        if ours(src) and ours(dst):
            keys.append((str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst)), proto,
                         sport, dport, icmp if proto.startswith("icmp") else None))
    return collections.Counter(keys)


def netbee_keys(events):
    funcs = {e["func"] for e in events}
    tx = next((f for f in TX_FUNCS if f in funcs), None)
    keys = []
    for e in events:
        if e["func"] not in RX_FUNCS and e["func"] != tx:
            continue
        if e["saddr"] is None or not (ours(e["saddr"]) and ours(e["daddr"])):
            continue
        icmp = e["icmp_type"] if e["proto"] in ("icmp", "icmp6") and \
            e["icmp_type"] in ICMP_TYPES else None
        keys.append((e["saddr"], e["daddr"], e["proto"] if e["proto"] in
                     ("tcp", "udp", "icmp", "icmp6") else "other", e["sport"], e["dport"], icmp))
    return collections.Counter(keys), funcs


def start_tcpdump(ns: netlab.Netns, ifname: str, expr: str) -> subprocess.Popen:
    # -q: one protocol word per line ("tcp 0", "UDP, length 8", "ICMP echo request, ...") instead
    # of application decodes (mDNS) that would hide the transport.
    proc = ns.popen(["tcpdump", "-i", ifname, "-n", "-q", "-l", "-tt", "--immediate-mode", expr])
    # Raw reads: a buffered readline() could swallow the "listening on" line into its buffer
    # while select() then waits for more bytes on the descriptor.
    fd = proc.stderr.fileno()
    seen = b""
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and sel.select(deadline - time.monotonic()):
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        seen += chunk
        if b"listening on" in seen:
            return proc
    proc.kill()
    raise AssertionError(f"tcpdump did not start: {seen!r} {proc.communicate()}")


def mixed_traffic(t: netlab.TwoHosts) -> None:
    netlab.ping(t.client, t.server_ip, count=2, interval=0.1)
    netlab.ping(t.client, t.server_ip6, count=2, interval=0.1)
    netlab.tcp_transfer(t.client, t.server, t.server_ip, 5201, 3000)
    netlab.tcp_transfer(t.client, t.server, t.server_ip6, 5202, 1000)
    netlab.udp_send(t.client, t.server_ip, 5353, open_port=True, dst_ns=t.server)
    netlab.udp_send(t.client, t.server_ip6, 9999, open_port=False)


@pytest.mark.parametrize("expr,variant", VARIANTS)
def test_netbee_selects_what_tcpdump_captures(two_hosts, expr, variant):
    t = two_hosts
    # Resolve neighbours first: ARP/NDP timing then cannot differ between the two windows.
    netlab.ping(t.client, t.server_ip, count=1)
    netlab.ping(t.client, t.server_ip6, count=1)
    dump = start_tcpdump(t.server, t.server_if, expr)
    run = None
    try:
        option = VARIANT_OPTION.get(variant)
        python_args = ("-c", VARIANT_MAIN.replace("OPTION", option)) if option else ("-m", "netbee")
        run = NetbeeRun("--netns", t.server.name, "-i", t.server_if, expr, python_args=python_args)
        mixed_traffic(t)
        run.stop(settle=1.0)
        time.sleep(0.2)
        dump.send_signal(signal.SIGINT)
        out, err = dump.communicate(timeout=20)
    finally:
        if run is not None:
            run.kill()
        if dump.poll() is None:
            dump.kill()
            dump.communicate()
    option = VARIANT_OPTION.get(variant)
    assert all(("filter: " + o in run.pre_lines) == (o == option) for o in VARIANT_OPTION.values()), run.pre_lines
    theirs = parse_tcpdump(out)
    mine, funcs = netbee_keys(run.events())
    assert theirs, f"tcpdump saw none of our packets for {expr!r}:\n{out}"
    assert mine == theirs, (expr, sorted(funcs), "only netbee:", mine - theirs,
                            "only tcpdump:", theirs - mine)
