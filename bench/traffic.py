"""Traffic generators for the benchmarks: small-UDP packets per second and iperf3 TCP throughput.

The sender is pinned to CPU 0: on a veth pair the whole receive path runs in
the sender's softirq, so every tracing program runs on that CPU and its cost
shows as fewer packets per second. Receivers and tracers' userspace go to CPU 1.
"""
from __future__ import annotations

import json
import signal
import subprocess
import time
from typing import Dict

from bench import build
from bench.lab import Pair

SEND_CPU = 0
OTHER_CPU = 1
UDP_PORT = 9208
TCP_PORT = 5208


def udp_trial(pair: Pair, seconds: float, rate: float = 0, payload: int = 18) -> Dict[str, float]:
    """One run of udpblast tx -> rx; returns sent/received counts and rates."""
    blast = str(build.udpblast())
    rx = subprocess.Popen(pair.cmd(pair.rx, [blast, "recv", str(UDP_PORT), str(seconds + 5)], OTHER_CPU),
                          stdout=subprocess.PIPE, text=True)
    try:
        ready = json.loads(rx.stdout.readline())
        if ready.get("mode") != "ready":
            raise RuntimeError(f"udpblast recv did not start: {ready}")
        before = pair.snmp_udp(pair.rx)
        tx = subprocess.run(pair.cmd(pair.tx, [blast, "send", pair.rx_ip, str(UDP_PORT), str(seconds),
                                               str(rate), str(payload)], SEND_CPU),
                            stdout=subprocess.PIPE, text=True, check=True)
        sent = json.loads(tx.stdout)
        time.sleep(0.2)  # let the receiver drain its socket
        rx.send_signal(signal.SIGINT)
        got = json.loads(rx.stdout.readline())
        rx.wait(timeout=5)
        after = pair.snmp_udp(pair.rx)
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    return {
        "sent": sent["sent"],
        "received": got["received"],
        "seconds": sent["seconds"],
        "sent_pps": sent["pps"],
        "recv_pps": got["received"] / sent["seconds"],
        "send_errors": sent["errors"],
        "cpu_ns_per_packet": 1e9 * sent["cpu_seconds"] / max(sent["sent"], 1),
        "rcvbuf_errors": after.get("RcvbufErrors", 0) - before.get("RcvbufErrors", 0),
    }


def iperf3_trial(pair: Pair, seconds: float) -> float:
    """TCP throughput tx -> rx in Gbit/s (iperf3 receiver's figure)."""
    srv = subprocess.Popen(pair.cmd(pair.rx, ["iperf3", "-s", "-1", "-p", str(TCP_PORT)], OTHER_CPU),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(pair, pair.rx, TCP_PORT)
        res = subprocess.run(pair.cmd(pair.tx, ["iperf3", "-c", pair.rx_ip, "-p", str(TCP_PORT), "-t",
                                                str(seconds), "-J"], SEND_CPU),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"iperf3 client failed: {res.stdout[-500:]} {res.stderr[-500:]}")
        out = json.loads(res.stdout)
        srv.wait(timeout=10)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
    return out["end"]["sum_received"]["bits_per_second"] / 1e9


def _wait_listening(pair: Pair, ns: str, port: int, timeout: float = 5.0) -> None:
    """Poll ss until a TCP listener on port exists in ns (a connect before that would be refused)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["ip", "netns", "exec", ns, "ss", "-Hltn", f"sport = :{port}"],
                             stdout=subprocess.PIPE, text=True).stdout
        if out.strip():
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on TCP port {port} in {ns}")
