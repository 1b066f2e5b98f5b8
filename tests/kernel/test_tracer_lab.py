"""Helpers for the tracer's integration tests: run a Tracer around traffic, pick events, check order.

Other test sessions run concurrently and the hooks are global, so every tracer here filters on the
inodes of this test's own namespaces (NB_FIELD_NETNS) and events are also checked in Python.
"""
from __future__ import annotations

import ipaddress
import re
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from netbee.filter import compile_filter
from netbee.tracer import TraceOptions, Tracer

# enum nb_hook values (bpf/src/netbee_abi.h)
NETIF_RX, NETIF_RECEIVE_SKB, IP_RCV, IP_LOCAL_DELIVER, IP_FORWARD = 1, 2, 3, 4, 5
ICMP_RCV, IP_QUEUE_XMIT, DEV_QUEUE_XMIT, NET_DEV_START_XMIT = 8, 10, 11, 12
NF_HOOK_SLOW, NF_BRACKET, KFREE_SKB = 13, 14, 15
IPV6_RCV, IP6_INPUT, ICMPV6_RCV, IP6_OUTPUT, IP_OUTPUT = 16, 17, 21, 24, 23
NF_PRE_ROUTING, NF_LOCAL_IN, NF_FORWARD, NF_LOCAL_OUT, NF_POST_ROUTING = range(5)
VERDICT_DROP, VERDICT_ACCEPT = 0, 1
NF_NAMES = ("PRE_ROUTING", "LOCAL_IN", "FORWARD", "LOCAL_OUT", "POST_ROUTING")


def label(ev) -> str:
    """A short name for an event: netfilter events by their hook, others by hook display name."""
    if ev.hook in (NF_BRACKET, NF_HOOK_SLOW):
        return NF_NAMES[ev.nf_hook] if ev.nf_hook is not None and ev.nf_hook < 5 else f"NF?{ev.nf_hook}"
    return ev.func


def options_for(namespaces, backend: str = "tracepoint", expression: Optional[str] = None,
                **kw) -> TraceOptions:
    inodes = [ns.inode() for ns in namespaces]
    rules = compile_filter(expression, netns_inodes=inodes)
    return TraceOptions(backend=backend, netns=[str(ns.path) for ns in namespaces], rules=rules, **kw)


def trace_during(opts: TraceOptions, action: Callable[[], object], settle: float = 0.3,
                 tracer_hook: Optional[Callable[[Tracer], None]] = None):
    """Start a tracer, run action() in a thread while reading, drain; (events, counters, report)."""
    events: List[object] = []
    with Tracer(opts) as tr:
        report = tr.start()
        if tracer_hook:
            tracer_hook(tr)
        err: List[BaseException] = []

        def run() -> None:
            try:
                action()
            except BaseException as e:  # reported in the test thread
                err.append(e)
        t = threading.Thread(target=run)
        t.start()
        while t.is_alive():
            events.extend(tr.events(timeout=0.05))
        t.join()
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            events.extend(tr.events(timeout=0.05))
        counters = tr.counters()
        if err:
            raise err[0]
    return events, counters, report


def in_namespaces(events, namespaces) -> list:
    inodes = {ns.inode() for ns in namespaces}
    return [e for e in events if e.netns in inodes]


def icmp_echo(events, family: int, icmp_type: int) -> list:
    return [e for e in events if e.family == family and e.icmp_type == icmp_type and e.hook != KFREE_SKB]


def assert_subsequence(events, expected: Sequence[Tuple[str, Callable[[object], bool]]], what: str) -> list:
    """expected: (description, predicate) in order; each must match a later event than the previous.

    Fails with the full event list and the first step that could not be found.
    """
    found = []
    i = 0
    for desc, pred in expected:
        while i < len(events) and not pred(events[i]):
            i += 1
        if i == len(events):
            lines = "\n".join(f"  {n:3} {describe(e)}" for n, e in enumerate(events))
            raise AssertionError(f"{what}: after {[d for d, _ in expected[:len(found)]]} "
                                 f"no event for {desc!r}; events were:\n{lines}")
        found.append(events[i])
        i += 1
    return found


def describe(ev) -> str:
    extra = ""
    if ev.hook in (NF_BRACKET, NF_HOOK_SLOW):
        extra = f" verdict={ev.verdict}"
    if ev.hook == KFREE_SKB:
        extra = f" reason={ev.drop_reason}"
    return (f"{label(ev):<20} ns={ev.netns} if={ev.ifindex} skb={ev.skb:#x} fam={ev.family} "
            f"proto={ev.proto} ttl={ev.ttl} {ev.saddr}:{ev.sport}->{ev.daddr}:{ev.dport} "
            f"icmp={ev.icmp_type}/{ev.icmp_code}/{ev.icmp_id}/{ev.icmp_seq}{extra}")


def hook_is(*hooks: int) -> Callable[[object], bool]:
    return lambda e: e.hook in hooks


def nf_is(nf_hook: int, verdict: Optional[int] = None) -> Callable[[object], bool]:
    return lambda e: (e.hook in (NF_BRACKET, NF_HOOK_SLOW) and e.nf_hook == nf_hook
                      and (verdict is None or e.verdict == verdict))


def both(p: Callable[[object], bool], q: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda e: p(e) and q(e)


def in_ns(ns) -> Callable[[object], bool]:
    ino = ns.inode()
    return lambda e: e.netns == ino


# Echo identifiers the tests choose (ping -e), so that every hook's icmp_id can be compared with
# what was really sent rather than only with the other hooks.
ECHO_ID4, ECHO_ID6 = 0x4e42, 0x4e43


def ping_with_id(ns, dst: str, ident: int) -> None:
    """One echo request with a chosen identifier (sequence 1); fails unless the reply came back."""
    fam = "-6" if ":" in dst else "-4"
    res = ns.run(["ping", fam, "-n", "-c", "1", "-W", "5", "-e", str(ident), dst], check=False, timeout=30)
    if not re.search(r"\b1 (?:packets )?received", res.stdout):
        raise AssertionError(f"ping -e {ident} {dst} from {ns.name}: no reply\n{res.stdout}{res.stderr}")


def field_errors(ev, expected: Dict[str, object], what: str) -> List[str]:
    """One line per field of ev that differs from expected, naming the hook and the field.

    Addresses compare as ipaddress objects; ttl expects a (low, high) range.
    """
    errors = []
    for name, want in expected.items():
        got = getattr(ev, name)
        if name == "ttl":
            ok = got is not None and want[0] <= got <= want[1]  # type: ignore[index]
        elif name in ("saddr", "daddr"):
            ok = got is not None and got == ipaddress.ip_address(want)  # type: ignore[arg-type]
        else:
            ok = got == want
        if not ok:
            errors.append(f"{what} at {label(ev)} ({ev.func}): {name} = {got!r}, expected {want!r}")
    return errors


def echo_expectation(family: int, src: str, dst: str, request: bool, ident: int,
                     seq: int = 1, hops: int = 0) -> Dict[str, object]:
    """The fields an ICMP/ICMPv6 echo request or reply from src to dst carries at every hook.

    ttl/hop limit: ping and the kernel's echo reply both start at 64 and each of `hops` routers
    takes one off; a wrong L3 offset reads some other byte there.
    """
    if family == 4:
        proto, icmp_type = 1, (8 if request else 0)
    else:
        proto, icmp_type = 58, (128 if request else 129)
    return {"family": family, "saddr": src, "daddr": dst, "proto": proto, "icmp_type": icmp_type,
            "icmp_code": 0, "icmp_id": ident, "icmp_seq": seq, "ttl": (64 - hops, 64),
            "sport": None, "dport": None}
