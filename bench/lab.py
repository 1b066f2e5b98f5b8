"""Two network namespaces joined by a veth pair, for the benchmarks only.

Names start with "nbb-" and addresses are 10.208.0.0/24 (issue 8), so the
benchmarks never collide with the test suite's namespaces nor send anything
outside the namespaces they create.
"""
from __future__ import annotations

import os
import subprocess
from typing import Dict, List, Optional, Sequence

TX_IP = "10.208.0.1"
RX_IP = "10.208.0.2"


def sh(cmd: Sequence[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a command, capture its output, and raise with stderr when it fails."""
    res = subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


class SetUpOnEnter:
    """A context manager whose close() also undoes a set-up that failed half-way."""

    def _setup(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):  # type: ignore[no-untyped-def]
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Pair(SetUpOnEnter):
    """nbb-<pid>-tx (10.208.0.1) <-> nbb-<pid>-rx (10.208.0.2); removed on exit, also on error."""

    def __init__(self, tag: Optional[str] = None) -> None:
        tag = tag or str(os.getpid())
        self.tx = f"nbb-{tag}-tx"
        self.rx = f"nbb-{tag}-rx"
        self.tx_ip = TX_IP
        self.rx_ip = RX_IP

    def _setup(self) -> None:
        for ns in (self.tx, self.rx):
            sh(["ip", "netns", "add", ns])
        # Created inside the namespaces, so no device name ever exists in the init netns.
        sh(["ip", "-n", self.tx, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0",
            "netns", self.rx])
        for ns, ip in ((self.tx, self.tx_ip), (self.rx, self.rx_ip)):
            sh(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "veth0"])
            sh(["ip", "-n", ns, "link", "set", "veth0", "up"])
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        # Resolve the neighbour once so no ARP is part of any measured run.
        sh(["ip", "netns", "exec", self.tx, "ping", "-c", "1", "-W", "2", self.rx_ip])

    def close(self) -> None:
        for ns in (self.tx, self.rx):
            sh(["ip", "netns", "del", ns], check=False)

    def cmd(self, ns: str, argv: Sequence[str], cpu: Optional[int] = None) -> List[str]:
        """argv run inside namespace ns, pinned to one CPU when cpu is given."""
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        return ["ip", "netns", "exec", ns] + pin + list(argv)

    def netns_path(self, ns: str) -> str:
        return f"/run/netns/{ns}"

    def ifindex(self, ns: str, dev: str = "veth0") -> int:
        out = sh(["ip", "netns", "exec", ns, "cat", f"/sys/class/net/{dev}/ifindex"]).stdout
        return int(out.strip())

    def snmp_udp(self, ns: str) -> Dict[str, int]:
        """The namespace's Udp: counters from /proc/net/snmp (InDatagrams, RcvbufErrors, ...)."""
        out = sh(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"]).stdout
        rows = [line.split() for line in out.splitlines() if line.startswith("Udp:")]
        return {k: int(v) for k, v in zip(rows[0][1:], rows[1][1:])}
