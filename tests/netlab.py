"""Network namespace topologies and traffic generators for NetBee's kernel tests.

Everything lives inside namespaces this module creates: addresses are 10.2XX.x.x and fd00:2XX::/64,
interfaces are created directly inside the namespaces (no global interface names to collide on),
and every namespace name carries a per-process token so concurrent test sessions never meet.
Deleting a namespace removes its veths, addresses, routes, nftables and iptables rules with it.
"""
from __future__ import annotations

import atexit
import ipaddress
import itertools
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

NETNS_DIR = Path("/run/netns")
# Each engineer/test suite may pick its own prefix; the pid makes names unique per session.
PREFIX = os.environ.get("NETBEE_NETNS_PREFIX", "nbt-")
SESSION_TOKEN = f"{PREFIX}{os.getpid()}-"
PYTHON = sys.executable or "python3"

Cmd = Union[str, Sequence[str]]

_counter = itertools.count(1)
_live: Dict[str, "Netns"] = {}
_addr_owner: Dict[str, "Netns"] = {}


class NetlabError(AssertionError):
    """A topology or traffic step failed; an AssertionError so pytest reports it as a test failure."""


def _argv(cmd: Cmd) -> List[str]:
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def _host(cmd: Cmd, check: bool = True, timeout: float = 30.0,
          input: Optional[str] = None) -> subprocess.CompletedProcess:
    argv = _argv(cmd)
    try:
        res = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise NetlabError(f"timed out after {timeout}s: {shlex.join(argv)}") from exc
    if check and res.returncode != 0:
        raise NetlabError(f"command failed (exit {res.returncode}): {shlex.join(argv)}\n"
                          f"stdout: {res.stdout.strip()}\nstderr: {res.stderr.strip()}")
    return res


def unique_name(role: str) -> str:
    """A namespace name unique to this process and call, e.g. 'nbt-1234-7-client'."""
    return f"{SESSION_TOKEN}{next(_counter)}-{role}"


class Netns:
    """A named network namespace (ip netns) with loopback up; a context manager that deletes it."""

    def __init__(self, name: str) -> None:
        if "/" in name or not name:
            raise ValueError(f"bad namespace name {name!r}")
        self.name = name
        self.path = NETNS_DIR / name
        self._procs: List[subprocess.Popen] = []
        self.created = False

    def create(self) -> "Netns":
        _host(["ip", "netns", "add", self.name])
        self.created = True
        _live[self.name] = self
        self.run("ip link set lo up")
        return self

    def __enter__(self) -> "Netns":
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.delete()

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    def argv(self, cmd: Cmd) -> List[str]:
        return ["ip", "netns", "exec", self.name] + _argv(cmd)

    def run(self, cmd: Cmd, check: bool = True, timeout: float = 30.0,
            input: Optional[str] = None) -> subprocess.CompletedProcess:
        """Run a command inside the namespace; raises NetlabError on a non-zero exit if check."""
        return _host(self.argv(cmd), check=check, timeout=timeout, input=input)

    def popen(self, cmd: Cmd, **kwargs: object) -> subprocess.Popen:
        """Start a command inside the namespace; it is killed when the namespace is deleted."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("text", True)
        proc = subprocess.Popen(self.argv(cmd), **kwargs)  # type: ignore[call-overload]
        self._procs.append(proc)
        return proc

    def sysctl(self, key: str, value: Union[str, int]) -> None:
        self.run(["sysctl", "-q", "-w", f"{key}={value}"])

    def ifindex(self, ifname: str) -> int:
        return int(self.run(["cat", f"/sys/class/net/{ifname}/ifindex"]).stdout.strip())

    def inode(self) -> int:
        """The namespace inode number, as BPF programs see it in net->ns.inum."""
        return os.stat(self.path).st_ino

    def delete(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.communicate(timeout=5)
            except (subprocess.TimeoutExpired, ValueError):
                pass
        self._procs.clear()
        if self.created:
            _host(["ip", "netns", "del", self.name], check=False)
            self.created = False
        _live.pop(self.name, None)
        for addr in [a for a, ns in _addr_owner.items() if ns is self]:
            del _addr_owner[addr]


def add_address(ns: Netns, ifname: str, cidr: str) -> None:
    iface = ipaddress.ip_interface(cidr)
    # nodad: the address is usable at once instead of after ~1 s of duplicate address detection.
    extra = ["nodad"] if iface.version == 6 else []
    ns.run(["ip", "addr", "add", cidr, "dev", ifname] + extra)
    _addr_owner[str(iface.ip)] = ns


def veth_pair(ns_a: Netns, ns_b: Netns, addr_a: Optional[str] = None, addr_b: Optional[str] = None,
              addr6_a: Optional[str] = None, addr6_b: Optional[str] = None,
              name_a: str = "veth0", name_b: str = "veth1") -> "tuple[str, str]":
    """Connect two namespaces with a veth pair, configure addresses (CIDR strings), bring it up."""
    ns_a.run(["ip", "link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b.name])
    for ns, ifname, addrs in ((ns_a, name_a, (addr_a, addr6_a)), (ns_b, name_b, (addr_b, addr6_b))):
        # Router solicitations and other IPv6 autoconf noise would show up in traces.
        ns.sysctl(f"net.ipv6.conf.{ifname}.accept_ra", 0)
        ns.sysctl(f"net.ipv6.conf.{ifname}.accept_dad", 0)
        for cidr in addrs:
            if cidr:
                add_address(ns, ifname, cidr)
        ns.run(["ip", "link", "set", ifname, "up"])
    _wait_up(ns_a, name_a)
    _wait_up(ns_b, name_b)
    return name_a, name_b


def _wait_up(ns: Netns, ifname: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        state = ns.run(["cat", f"/sys/class/net/{ifname}/operstate"]).stdout.strip()
        if state == "up":
            return
        if time.monotonic() > deadline:
            raise NetlabError(f"{ifname} in {ns.name} is {state!r}, not up, after {timeout}s")
        time.sleep(0.02)


@dataclass
class TwoHosts:
    client: Netns
    server: Netns
    client_if: str
    server_if: str
    client_ip: str
    server_ip: str
    client_ip6: str
    server_ip6: str
    client_ifindex: int = 0
    server_ifindex: int = 0

    def namespaces(self) -> List[Netns]:
        return [self.client, self.server]


@dataclass
class RoutedHosts:
    client: Netns
    router: Netns
    server: Netns
    client_if: str
    router_client_if: str
    router_server_if: str
    server_if: str
    client_ip: str
    router_client_ip: str
    router_server_ip: str
    server_ip: str
    client_ip6: str
    router_client_ip6: str
    router_server_ip6: str
    server_ip6: str
    extra: Dict[str, int] = field(default_factory=dict)

    def namespaces(self) -> List[Netns]:
        return [self.client, self.router, self.server]


def make_two_hosts(net: int = 201) -> TwoHosts:
    """client (10.<net>.1.1, fd00:<net>::1) <-> server (10.<net>.1.2, fd00:<net>::2); caller deletes."""
    if not 200 <= net <= 254:
        raise ValueError("test networks are 10.200.0.0 .. 10.254.0.0")
    client = Netns(unique_name("client")).create()
    server = Netns(unique_name("server"))
    try:
        server.create()
        c4, s4, c6, s6 = f"10.{net}.1.1", f"10.{net}.1.2", f"fd00:{net}::1", f"fd00:{net}::2"
        cif, sif = veth_pair(client, server, f"{c4}/24", f"{s4}/24", f"{c6}/64", f"{s6}/64",
                             name_a="veth-c", name_b="veth-s")
        return TwoHosts(client, server, cif, sif, c4, s4, c6, s6,
                        client.ifindex(cif), server.ifindex(sif))
    except BaseException:
        server.delete()
        client.delete()
        raise


def make_routed_hosts(net: int = 202) -> RoutedHosts:
    """client - router - server over two veth pairs: 10.<net>.1.0/24 and 10.<net+1>.1.0/24 (and v6)."""
    if not 200 <= net <= 253:
        raise ValueError("test networks are 10.200.0.0 .. 10.254.0.0")
    left, right = net, net + 1
    spaces = [Netns(unique_name(r)) for r in ("client", "router", "server")]
    client, router, server = spaces
    try:
        for ns in spaces:
            ns.create()
        veth_pair(client, router, f"10.{left}.1.1/24", f"10.{left}.1.254/24",
                  f"fd00:{left}::1/64", f"fd00:{left}::fe/64", name_a="veth-c", name_b="veth-rc")
        veth_pair(router, server, f"10.{right}.1.254/24", f"10.{right}.1.2/24",
                  f"fd00:{right}::fe/64", f"fd00:{right}::2/64", name_a="veth-rs", name_b="veth-s")
        router.sysctl("net.ipv4.ip_forward", 1)
        router.sysctl("net.ipv6.conf.all.forwarding", 1)
        client.run(f"ip route add default via 10.{left}.1.254")
        client.run(f"ip -6 route add default via fd00:{left}::fe")
        server.run(f"ip route add default via 10.{right}.1.254")
        server.run(f"ip -6 route add default via fd00:{right}::fe")
        return RoutedHosts(
            client, router, server, "veth-c", "veth-rc", "veth-rs", "veth-s",
            f"10.{left}.1.1", f"10.{left}.1.254", f"10.{right}.1.254", f"10.{right}.1.2",
            f"fd00:{left}::1", f"fd00:{left}::fe", f"fd00:{right}::fe", f"fd00:{right}::2",
            {"client": client.ifindex("veth-c"), "router_client": router.ifindex("veth-rc"),
             "router_server": router.ifindex("veth-rs"), "server": server.ifindex("veth-s")})
    except BaseException:
        for ns in spaces:
            ns.delete()
        raise


# ---------------------------------------------------------------- traffic

@dataclass
class PingResult:
    transmitted: int
    received: int
    output: str


def _family(ip: str) -> int:
    return ipaddress.ip_address(ip).version


def ping(ns: Netns, dst: str, count: int = 1, interval: float = 0.2, timeout: float = 2.0,
         expect_reply: Optional[bool] = True, size: Optional[int] = None) -> PingResult:
    """ping (IPv4 or IPv6 chosen by dst); expect_reply True/False asserts all/none answered."""
    argv = ["ping", f"-{_family(dst)}", "-n", "-c", str(count), "-i", str(interval), "-W", str(timeout)]
    if size is not None:
        argv += ["-s", str(size)]
    res = ns.run(argv + [dst], check=False, timeout=count * interval + timeout + 10)
    m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", res.stdout)
    if not m:
        raise NetlabError(f"cannot parse ping output from {ns.name}:\n{res.stdout}{res.stderr}")
    result = PingResult(int(m.group(1)), int(m.group(2)), res.stdout)
    if expect_reply is True and result.received != count:
        raise NetlabError(f"ping {dst} from {ns.name}: {result.received}/{count} replies\n{res.stdout}")
    if expect_reply is False and result.received != 0:
        raise NetlabError(f"ping {dst} from {ns.name}: expected no reply, got {result.received}")
    return result


_TCP_SERVER = r"""
import socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
s.settimeout(float(sys.argv[3]))
print('READY', flush=True)
c, _ = s.accept()
c.settimeout(float(sys.argv[3]))
n = 0
while True:
    d = c.recv(65536)
    if not d:
        break
    n += len(d)
c.sendall(b'ok')
c.close()
print(n, flush=True)
"""

_TCP_CLIENT = r"""
import socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.settimeout(float(sys.argv[4]))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
except ConnectionRefusedError:
    print('refused'); sys.exit(0)
except (socket.timeout, OSError) as e:
    print('timeout' if isinstance(e, socket.timeout) else 'error:%s' % e); sys.exit(0)
left = int(sys.argv[3])
chunk = b'n' * 65536
while left > 0:
    k = s.send(chunk[:min(left, len(chunk))])
    left -= k
s.shutdown(socket.SHUT_WR)
ack = s.recv(16)
print('connected' if ack == b'ok' else 'noack')
"""


def _py(code: str) -> List[str]:
    # -I -S: no user site, no site-packages: starts fast, also inside slow QEMU guests.
    return [PYTHON, "-I", "-S", "-c", code]


def _read_ready(proc: subprocess.Popen, what: str, timeout: float) -> None:
    # A readiness line instead of a sleep: the listener is bound before the client starts.
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
    if not sel.select(timeout):
        proc.kill()
        raise NetlabError(f"{what} not ready after {timeout}s: {proc.stderr.read() if proc.stderr else ''}")
    line = proc.stdout.readline().strip()  # type: ignore[union-attr]
    if line != "READY":
        proc.kill()
        err = proc.stderr.read() if proc.stderr else ""
        raise NetlabError(f"{what} failed to start: {line!r} {err}")


def tcp_transfer(src_ns: Netns, dst_ns: Netns, dst_ip: str, port: int, nbytes: int,
                 timeout: float = 15.0) -> int:
    """Connect from src_ns to a listener in dst_ns and send nbytes; returns bytes the server got."""
    server = dst_ns.popen(_py(_TCP_SERVER) + [dst_ip, str(port), str(timeout)])
    try:
        _read_ready(server, f"TCP listener {dst_ip}:{port}", timeout)
        res = src_ns.run(_py(_TCP_CLIENT) + [dst_ip, str(port), str(nbytes), str(timeout)],
                         timeout=timeout + 10)
        outcome = res.stdout.strip()
        if outcome != "connected":
            raise NetlabError(f"TCP {src_ns.name} -> {dst_ip}:{port}: {outcome} {res.stderr.strip()}")
        out, err = server.communicate(timeout=timeout)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    got = int(out.strip().splitlines()[-1]) if out.strip() else -1
    if got != nbytes:
        raise NetlabError(f"TCP server got {got} of {nbytes} bytes: {err.strip()}")
    return got


def tcp_connect(src_ns: Netns, dst_ip: str, port: int, timeout: float = 2.0) -> str:
    """One TCP connect attempt without a listener set up by us: 'refused', 'timeout' or 'connected'."""
    res = src_ns.run(_py(_TCP_CLIENT) + [dst_ip, str(port), "0", str(timeout)], timeout=timeout + 10)
    return res.stdout.strip()


_UDP_LISTENER = r"""
import socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(float(sys.argv[3]))
print('READY', flush=True)
try:
    d, peer = s.recvfrom(65536)
    print(len(d), flush=True)
except socket.timeout:
    print('timeout', flush=True)
"""

_UDP_SENDER = r"""
import socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.connect((sys.argv[1], int(sys.argv[2])))
s.settimeout(float(sys.argv[4]))
s.send(b'x' * int(sys.argv[3]))
try:
    s.recv(16)
    print('reply')
except ConnectionRefusedError:
    print('refused')
except socket.timeout:
    print('sent')
"""


def udp_send(src_ns: Netns, dst_ip: str, port: int, open_port: bool, dst_ns: Optional[Netns] = None,
             size: int = 32, timeout: float = 2.0) -> str:
    """Send one UDP datagram. open_port=True: a listener in dst_ns (found from dst_ip if omitted) must
    receive it ('delivered'); open_port=False: nothing listens and an ICMP port unreachable must come
    back ('refused')."""
    if open_port:
        owner = dst_ns or _addr_owner.get(str(ipaddress.ip_address(dst_ip)))
        if owner is None:
            raise NetlabError(f"no namespace of this session owns {dst_ip}; pass dst_ns")
        listener = owner.popen(_py(_UDP_LISTENER) + [dst_ip, str(port), str(timeout + 5)])
        try:
            _read_ready(listener, f"UDP listener {dst_ip}:{port}", timeout + 5)
            src_ns.run(_py(_UDP_SENDER) + [dst_ip, str(port), str(size), "0.2"], timeout=timeout + 10)
            out, err = listener.communicate(timeout=timeout + 10)
        finally:
            if listener.poll() is None:
                listener.kill()
                listener.communicate()
        if out.strip() != str(size):
            raise NetlabError(f"UDP listener {dst_ip}:{port} got {out.strip()!r} {err.strip()}")
        return "delivered"
    res = src_ns.run(_py(_UDP_SENDER) + [dst_ip, str(port), str(size), str(timeout)], timeout=timeout + 10)
    outcome = res.stdout.strip()
    if outcome != "refused":
        raise NetlabError(f"UDP to closed port {dst_ip}:{port}: expected ICMP unreachable, got {outcome!r}")
    return outcome


# ---------------------------------------------------------------- firewalls

def nft(ns: Netns, ruleset: str) -> subprocess.CompletedProcess:
    """Load an nftables ruleset (nft -f syntax) into the namespace; gone with the namespace."""
    return ns.run(["nft", "-f", "-"], input=ruleset)


def iptables(ns: Netns, args: Cmd, legacy: bool = False) -> subprocess.CompletedProcess:
    return ns.run(["iptables-legacy" if legacy else "iptables"] + _argv(args))


def ip6tables(ns: Netns, args: Cmd, legacy: bool = False) -> subprocess.CompletedProcess:
    return ns.run(["ip6tables-legacy" if legacy else "ip6tables"] + _argv(args))


# ---------------------------------------------------------------- cleanup

def delete_all_live() -> None:
    for ns in list(_live.values()):
        ns.delete()


def sweep(prefix: str = PREFIX) -> List[str]:
    """Delete this session's namespaces and those left by dead processes with the same prefix."""
    removed = []
    delete_all_live()
    if not NETNS_DIR.is_dir():
        return removed
    pattern = re.compile(re.escape(prefix) + r"(\d+)-")
    for entry in sorted(os.listdir(NETNS_DIR)):
        m = pattern.match(entry)
        if not m:
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or not os.path.exists(f"/proc/{pid}"):
            _host(["ip", "netns", "del", entry], check=False)
            removed.append(entry)
    return removed


atexit.register(delete_all_live)
