"""Cross-check the compiler + evaluator against tcpdump itself, offline (no root, no network).

A pcap of synthetic frames (v4/v6; ICMP, ICMPv6, TCP, UDP, SCTP, GRE; ARP) is filtered by
`tcpdump -r` with each expression; rules_match over the same packets must select the same set.
"""
from __future__ import annotations

import ipaddress
import random
import shutil
import struct
import subprocess

import pytest

from netbee.filter import compile_filter, rules_match

V4 = ["10.201.1.1", "10.201.1.2", "10.201.2.5", "10.99.0.1"]
V6 = ["fd00:201::1", "fd00:201::2", "fd00:202::7", "fd00:99::1"]
PORTS = [22, 53, 80, 443, 1000, 5353, 8080]


def _l4(proto, sport, dport):
    if proto == 6:
        return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 1024, 0, 0)
    if proto == 17:
        return struct.pack("!HHHH", sport, dport, 8, 0)
    if proto == 132:
        return struct.pack("!HHII", sport, dport, 0, 0)
    if proto in (1, 58):
        return struct.pack("!BBHHH", 8 if proto == 1 else 128, 0, 0, 1, 1)
    return b"\0" * 8


def _frame(p):
    if p["family"] == 0:
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, b"\2" * 6, bytes(4), bytes(6), bytes(4))
        return b"\xff" * 6 + b"\2" * 6 + b"\x08\x06" + arp
    l4 = _l4(p["proto"], p["sport"] or 0, p["dport"] or 0)
    if p["family"] == 4:
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, p["proto"], 0,
                          p["saddr"].packed, p["daddr"].packed)
        return b"\2" * 6 + b"\4" * 6 + b"\x08\x00" + hdr + l4
    hdr = struct.pack("!IHBB16s16s", 6 << 28, len(l4), p["proto"], 64,
                      p["saddr"].packed, p["daddr"].packed)
    return b"\2" * 6 + b"\4" * 6 + b"\x86\xdd" + hdr + l4


def _packets():
    rnd = random.Random(5)
    out = []
    for i in range(400):
        family = rnd.choice([4, 4, 6, 6, 0])
        if family == 0:
            out.append(dict(family=0, proto=None, saddr=None, daddr=None, sport=None, dport=None))
            continue
        proto = rnd.choice([6, 17, 132, 47, 1 if family == 4 else 58, 1, 58])
        addrs = V4 if family == 4 else V6
        s, d = rnd.sample(addrs, 2)
        ports = proto in (6, 17, 132)
        out.append(dict(family=family, proto=proto, saddr=ipaddress.ip_address(s),
                        daddr=ipaddress.ip_address(d),
                        sport=rnd.choice(PORTS) if ports else None,
                        dport=rnd.choice(PORTS) if ports else None))
    return out


PACKETS = _packets()


@pytest.fixture(scope="module")
def pcap(tmp_path_factory):
    path = tmp_path_factory.mktemp("pcap") / "mixed.pcap"
    with open(path, "wb") as f:
        f.write(struct.pack("=IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, p in enumerate(PACKETS):
            data = _frame(p)
            f.write(struct.pack("=IIII", i + 1, 0, len(data), len(data)) + data)
    return path


EXPRESSIONS = [
    "host 10.201.1.1", "src host 10.201.1.2", "dst host fd00:201::2", "host fd00:202::7",
    "net 10.201.0.0/16", "dst net 10.201.2.0/24", "src net fd00:201::/64", "net 10.201",
    "net 10.0.0.0 mask 255.0.0.0",
    "port 80", "src port 53", "dst port 443", "portrange 50-500", "src portrange 1000-9000",
    "dst portrange 20-60", "tcp", "udp", "icmp", "icmp6", "sctp", "proto 47", "ip proto 1",
    "ip6 proto 1", "ip6 proto 58", "ip", "ip6", "tcp port 80", "udp dst port 53",
    "not tcp", "! ip", "tcp or udp and port 53", "tcp and port 80 or icmp",
    "not host 10.201.1.1 and 10.201.1.2", "host 10.201.1.1 or 10.201.2.5",
    "(tcp or udp) and not (port 22 or port 80)", "icmp or icmp6 or not ip and not ip6",
    "src or dst host 10.201.1.2", "src and dst net 10.201.0.0/16",
    "ip and (src net 10.201.1.0/24 || dst port 22) && !udp",
    "port 22 or 80 or 443",
]


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_same_packets_as_tcpdump(pcap, expr):
    tcpdump = shutil.which("tcpdump") or "/usr/bin/tcpdump"
    res = subprocess.run([tcpdump, "-r", str(pcap), "-n", "-tt", expr],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    theirs = {int(line.split(".", 1)[0]) - 1 for line in res.stdout.splitlines() if line}
    rules = compile_filter(expr)
    ours = {i for i, p in enumerate(PACKETS) if rules_match(rules, p)}
    assert ours == theirs, (expr, sorted(ours ^ theirs)[:10])
    assert 0 < len(ours) < len(PACKETS), expr  # a trivial selection would prove nothing
