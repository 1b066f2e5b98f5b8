"""The tracepoint-backend programs on this kernel, driven directly through the loader (no tracer):
the events they emit for real traffic between two namespaces, field by field.

- an ICMP echo passes the hooks in order with correct addresses, ids, TTL, netns and ifindex;
- an nftables DROP at input gives a LOCAL_IN bracket event with verdict DROP, then a kfree_skb
  event with reason NETFILTER_DROP (number taken from the kernel's BTF) and a call stack;
- a filter that excludes a flow produces no event for it, and the counters say so;
- TCP ports/flags/state and the flow inside an ICMP port unreachable are decoded;
- IPv6 the same.
The rig adds a netns filter (only our two namespaces), so concurrent traffic elsewhere stays out.
"""
from __future__ import annotations

import ipaddress
import os
import struct
import time
from typing import Iterator, List, Optional

import pytest

from netbee import abi, hooks
from netbee.decode import Event, decode_event
from netbee.filter import Rule, encode_rules
from netbee.loader import links
from netbee.loader.btf import Btf
from netbee.loader.collection import Collection
from netbee.loader.elf import ObjectSpec
from netbee.loader.errors import AttachError
from netbee.loader.ringbuf import RingBufReader
from tests import netlab
from tests.kernel.test_programs_verify import OBJ

pytestmark = [pytest.mark.kernel, pytest.mark.backend("tracepoint")]

NET = 214   # 10.214.1.0/24, fd00:214::/64
KBTF = Btf.load_kernel()


@pytest.fixture
def hosts(monkeypatch: pytest.MonkeyPatch) -> Iterator[netlab.TwoHosts]:
    monkeypatch.setattr(netlab, "SESSION_TOKEN", f"nbp-{os.getpid()}-")
    topo = netlab.make_two_hosts(NET)
    try:
        yield topo
    finally:
        for ns in topo.namespaces():
            ns.delete()


class Rig:
    """tracepoint-backend programs loaded, tp_btf attached, netfilter bracket in both namespaces."""

    def __init__(self, topo: netlab.TwoHosts, extra: Optional[List[Rule]] = None, want_stack: bool = True):
        self.topo = topo
        self.netns = (topo.client.inode(), topo.server.inode())
        rules = [Rule(op=abi.RuleOp.TERM, field=abi.RuleField.NETNS, value=self.netns[0]),
                 Rule(op=abi.RuleOp.TERM, field=abi.RuleField.NETNS, value=self.netns[1]),
                 Rule(op=abi.RuleOp.OR)]
        if extra:
            rules += extra + [Rule(op=abi.RuleOp.AND)]
        spec = ObjectSpec.from_path(str(OBJ))
        spec.set_global("cfg", abi.build_config(encode_rules(rules), len(rules), want_stack=want_stack,
                                                wakeup_bytes=0))
        spec.set_global("self_pid", struct.pack("<I", os.getpid()))
        self.links: List[links.Link] = []
        self.coll = Collection(spec, kernel_btf=KBTF, programs=hooks.programs_for("tracepoint"),
                               map_sizes={"events": 1 << 22})
        try:
            for name, prog in self.coll.programs.items():
                if prog.kind != "netfilter":
                    self.links.append(links.attach(prog))
                    continue
                prio = hooks.NF_BRACKET_ENTRY_PRIORITY if name == "nf_entry" else hooks.NF_BRACKET_EXIT_PRIORITY
                step = 1 if name == "nf_entry" else -1
                for ns in topo.namespaces():
                    for pf in (hooks.NF_PF_IPV4, hooks.NF_PF_IPV6):
                        for hook in range(5):
                            self.links.append(self._nf_link(prog, pf, hook, prio, step, str(ns.path)))
            self.reader = RingBufReader(self.coll.maps["events"])
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _nf_link(prog, pf: int, hook: int, prio: int, step: int, netns: str) -> links.Link:
        """A priority taken by someone else (conntrack sits at the extremes) gives EBUSY: step inward."""
        for k in range(8):
            try:
                return links.attach_netfilter(prog, pf, hook, prio + k * step, netns=netns)
            except AttachError as e:
                if "EBUSY" not in str(e) or k == 7:
                    raise
        raise AssertionError("unreachable")

    def events(self, quiet: float = 0.4) -> List[Event]:
        """Everything emitted until nothing arrived for `quiet` seconds."""
        out: List[Event] = []
        while True:
            batch = self.reader.read(timeout=quiet)
            if not batch:
                return out
            out += [decode_event(r) for r in batch]

    def counters(self) -> List[int]:
        """[filtered, submitted, lost]: the `counters` map and every nesting level's counts in
        the `scratch` map, summed (abi.count_events)."""
        cm = self.coll.maps["counters"]
        shared = {c: cm.lookup_percpu(int(c)) for c in abi.EVENT_COUNTERS}
        got = abi.count_events(shared, self.coll.maps["scratch"].lookup_percpu(0))
        return [got[abi.NbCounter.FILTERED], got[abi.NbCounter.SUBMITTED], got[abi.NbCounter.LOST]]

    def close(self) -> None:
        if getattr(self, "reader", None) is not None:
            self.reader.close()
        for link in self.links:
            link.close()
        self.coll.close()

    def __enter__(self) -> "Rig":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def where(ev: Event) -> str:
    name = ev.func
    if ev.nf_hook is not None:
        name += f"/{hooks.nf_hook_name(ev.nf_hook)}/{hooks.verdict_name(ev.verdict)}"
    return name


def echo_path(evs: List[Event], icmp_type: int, ident: int) -> List[Event]:
    return [e for e in evs if e.icmp_type == icmp_type and e.icmp_id == ident and e.hook != abi.NbHook.KFREE_SKB]


def assert_subsequence(got: List[str], want: List[str]) -> None:
    it = iter(got)
    for w in want:
        assert any(g == w for g in it), f"{w} missing or out of order in {got}"


def ping_id(evs: List[Event], icmp_type: int) -> int:
    ids = {e.icmp_id for e in evs if e.icmp_type == icmp_type}
    assert len(ids) == 1, f"expected one echo id, got {ids}"
    return ids.pop()


@pytest.mark.parametrize("family", [4, 6])
def test_icmp_echo_passes_every_hook_in_order(hosts: netlab.TwoHosts, family: int) -> None:
    dst = hosts.server_ip if family == 4 else hosts.server_ip6
    src = hosts.client_ip if family == 4 else hosts.client_ip6
    req, rep = (8, 0) if family == 4 else (128, 129)
    with Rig(hosts) as rig:
        netlab.ping(hosts.client, dst, count=1)
        evs = rig.events()
    ident = ping_id(evs, req)
    out = echo_path(evs, req, ident)
    back = echo_path(evs, rep, ident)
    client_ns, server_ns = rig.netns
    path = ["netfilter/LOCAL_OUT/ACCEPT", "netfilter/POST_ROUTING/ACCEPT", "dev_queue_xmit",
            "net_dev_start_xmit", "netif_rx", "netif_receive_skb", "netfilter/PRE_ROUTING/ACCEPT",
            "netfilter/LOCAL_IN/ACCEPT"]
    assert_subsequence([where(e) for e in out], path)
    assert_subsequence([where(e) for e in back], path)
    for e in out:
        assert (e.family, e.proto, str(e.saddr), str(e.daddr)) == (family, 1 if family == 4 else 58, src, dst)
        assert e.icmp_seq == 1 and e.ttl == 64
        sending = e.func in ("dev_queue_xmit", "net_dev_start_xmit") or e.nf_hook in (3, 4)
        assert e.netns == (client_ns if sending else server_ns), where(e)
        assert e.ifindex == (hosts.client_ifindex if sending else hosts.server_ifindex), where(e)
        if e.func in ("netif_rx", "netif_receive_skb", "dev_queue_xmit"):
            assert e.smac is not None and e.ethertype == (0x0800 if family == 4 else 0x86DD)
    assert all(ipaddress.ip_address(str(e.saddr)) == ipaddress.ip_address(dst) for e in back)


@pytest.mark.parametrize("family", [4, 6])
def test_nft_drop_at_input_gives_local_in_drop_and_netfilter_drop_reason(hosts: netlab.TwoHosts,
                                                                        family: int) -> None:
    netfilter_drop = KBTF.enum_values("skb_drop_reason")["SKB_DROP_REASON_NETFILTER_DROP"]
    netlab.nft(hosts.server, "table inet nbp {\n chain inp {\n type filter hook input priority 0;\n"
                             " icmp type echo-request drop\n icmpv6 type echo-request drop\n }\n}\n")
    dst = hosts.server_ip if family == 4 else hosts.server_ip6
    req = 8 if family == 4 else 128
    with Rig(hosts) as rig:
        netlab.ping(hosts.client, dst, count=1, timeout=1, expect_reply=False)
        evs = rig.events()
    ident = ping_id(evs, req)
    mine = [e for e in evs if e.icmp_type == req and e.icmp_id == ident]
    names = [where(e) for e in mine]
    assert_subsequence(names, ["netfilter/PRE_ROUTING/ACCEPT", "netfilter/LOCAL_IN/DROP", "kfree_skb"])
    assert "netfilter/LOCAL_IN/ACCEPT" not in names
    bracket = next(e for e in mine if e.nf_hook == 1)
    assert bracket.drop_reason == netfilter_drop and bracket.location
    drop = next(e for e in mine if e.hook == abi.NbHook.KFREE_SKB)
    assert drop.drop_reason == netfilter_drop and drop.location == bracket.location
    assert drop.skb == bracket.skb
    assert drop.stack and len(drop.stack) >= 3 and all(a >= 0xffff800000000000 for a in drop.stack)


def test_filter_excluding_the_flow_emits_nothing_for_it(hosts: netlab.TwoHosts) -> None:
    only_udp = [Rule(op=abi.RuleOp.TERM, field=abi.RuleField.PROTO, lo=17)]
    with Rig(hosts, extra=only_udp) as rig:
        netlab.ping(hosts.client, hosts.server_ip, count=2)
        evs = rig.events()
        filtered, submitted, lost = rig.counters()
    assert not [e for e in evs if e.proto == 1], [where(e) for e in evs if e.proto == 1]
    assert filtered >= 2 * 16, (filtered, submitted, lost)   # two echoes, 8 hooks each way
    assert submitted == len(evs) and lost == 0


def test_counters_match_what_was_read(hosts: netlab.TwoHosts) -> None:
    with Rig(hosts) as rig:
        netlab.ping(hosts.client, hosts.server_ip, count=3, interval=0.05)
        evs = rig.events()
        filtered, submitted, lost = rig.counters()
    assert lost == 0 and submitted == len(evs) > 0


def test_tcp_fields_and_socket_state(hosts: netlab.TwoHosts) -> None:
    with Rig(hosts) as rig:
        netlab.tcp_transfer(hosts.client, hosts.server, hosts.server_ip, 5214, 3000)
        evs = rig.events()
    tcp = [e for e in evs if e.proto == 6 and e.func == "dev_queue_xmit"]
    syn = next(e for e in tcp if e.tcp_flags == 0x02)
    assert syn.dport == 5214 and str(syn.daddr) == hosts.server_ip and syn.tcp_state == 2   # SYN_SENT
    synack = next(e for e in tcp if e.tcp_flags == 0x12)
    assert (synack.sport, synack.dport, synack.ack) == (5214, syn.sport, syn.seq + 1)
    data = [e for e in tcp if e.sport == syn.sport and e.payload_len]
    assert sum(e.payload_len for e in data) == 3000
    assert all(e.tcp_state == 1 for e in data)                                             # ESTABLISHED


@pytest.mark.parametrize("family", [4, 6])
def test_icmp_port_unreachable_carries_the_original_flow(hosts: netlab.TwoHosts, family: int) -> None:
    dst = hosts.server_ip if family == 4 else hosts.server_ip6
    src = hosts.client_ip if family == 4 else hosts.client_ip6
    with Rig(hosts) as rig:
        netlab.udp_send(hosts.client, dst, 5999, open_port=False)
        evs = rig.events()
    udp = next(e for e in evs if e.proto == 17 and e.dport == 5999)
    errors = [e for e in evs if e.icmp_type == (3 if family == 4 else 1) and e.inner is not None]
    assert errors, [where(e) for e in evs]
    inner = errors[0].inner
    assert (inner.proto, str(inner.saddr), str(inner.daddr), inner.sport, inner.dport) == \
        (17, src, dst, udp.sport, 5999)
    assert udp.udp_len == 8 + 32


def test_nft_reject_nested_reply_does_not_confuse_the_bracket(hosts: netlab.TwoHosts) -> None:
    """reject builds the ICMP error inside the input hook: its own LOCAL_OUT/POST_ROUTING pass is
    nested in the original's LOCAL_IN, which still ends as DROP with reason NETFILTER_DROP."""
    netfilter_drop = KBTF.enum_values("skb_drop_reason")["SKB_DROP_REASON_NETFILTER_DROP"]
    netlab.nft(hosts.server, "table inet nbp {\n chain inp {\n type filter hook input priority 0;\n"
                             " udp dport 5998 reject\n }\n}\n")
    with Rig(hosts) as rig:
        netlab.udp_send(hosts.client, hosts.server_ip, 5998, open_port=False)
        evs = rig.events()
    server_ns = rig.netns[1]
    udp = [where(e) for e in evs if e.netns == server_ns and e.proto == 17 and e.nf_hook is not None]
    assert udp == ["netfilter/PRE_ROUTING/ACCEPT", "netfilter/LOCAL_IN/DROP"], udp
    drop = next(e for e in evs if e.netns == server_ns and e.proto == 17 and e.nf_hook == 1)
    assert drop.drop_reason == netfilter_drop
    reply = [where(e) for e in evs if e.netns == server_ns and e.proto == 1 and e.nf_hook is not None]
    assert reply == ["netfilter/LOCAL_OUT/ACCEPT", "netfilter/POST_ROUTING/ACCEPT"], reply


def test_defragmentation_steals_fragments(hosts: netlab.TwoHosts) -> None:
    """With conntrack on, PRE_ROUTING reassembles: the fragments that do not carry on are STOLEN,
    the one that becomes the whole datagram is ACCEPTed, and LOCAL_IN sees one packet."""
    netlab.nft(hosts.server, "table inet nbp {\n chain pre {\n type filter hook prerouting priority 0;\n"
                             " ct state new counter\n }\n}\n")
    with Rig(hosts) as rig:
        netlab.ping(hosts.client, hosts.server_ip, count=1, size=3000)
        evs = rig.events()
    server_ns = rig.netns[1]
    pre = [e for e in evs if e.netns == server_ns and e.nf_hook == 0 and e.proto == 1]
    verdicts = sorted(hooks.verdict_name(e.verdict) for e in pre)
    assert verdicts == ["ACCEPT", "STOLEN", "STOLEN"], [where(e) for e in pre]   # 3000 B over MTU 1500
    local_in = [e for e in evs if e.netns == server_ns and e.nf_hook == 1 and e.icmp_type == 8]
    assert [hooks.verdict_name(e.verdict) for e in local_in] == ["ACCEPT"]
    assert local_in[0].ip_len == 3028


# ---------------------------------------------------------------- kprobe / fentry backends (QEMU guests)

class FuncRig(Rig):
    """kprobe or fentry backend programs from hooks.py, symbols resolved like the tracer does."""

    def __init__(self, topo: netlab.TwoHosts, backend: str):   # noqa: D107 - replaces Rig's loading
        from tests.kernel.test_programs_verify import resolve
        self.topo = topo
        self.netns = (topo.client.inode(), topo.server.inode())
        rules = [Rule(op=abi.RuleOp.TERM, field=abi.RuleField.NETNS, value=self.netns[0]),
                 Rule(op=abi.RuleOp.TERM, field=abi.RuleField.NETNS, value=self.netns[1]),
                 Rule(op=abi.RuleOp.OR)]
        spec = ObjectSpec.from_path(str(OBJ))
        spec.set_global("cfg", abi.build_config(encode_rules(rules), len(rules), want_stack=True))
        spec.set_global("self_pid", struct.pack("<I", os.getpid()))
        plan = {}
        for h in hooks.hooks_for(backend):
            for alt in h.alternatives(backend):
                syms = {t.program: (resolve(t) if t.kind not in ("tp_btf",) else None) for t in alt}
                if all(s is not None or t.kind == "tp_btf" for t, s in zip(alt, syms.values())):
                    plan.update(syms)
                    break
        assert "kp_ip_rcv" in plan or "fe_ip_rcv" in plan, plan
        self.links = []
        self.coll = Collection(spec, kernel_btf=KBTF, programs=list(plan), map_sizes={"events": 1 << 22},
                               overrides={p: {"attach_target": s} for p, s in plan.items() if s})
        self.skipped = {}
        try:
            for name, prog in self.coll.programs.items():
                try:
                    self.links.append(links.attach(prog))
                except AttachError as e:
                    # some functions cannot be traced on some kernels (6.1: fentry on ip6_xmit
                    # gives ENOTSUPP); the tracer reports those as skipped hooks, so does this
                    self.skipped[name] = str(e)
            self.reader = RingBufReader(self.coll.maps["events"])
        except BaseException:
            self.close()
            raise


@pytest.mark.parametrize("backend", [
    pytest.param("kprobe", marks=pytest.mark.requires_kernel("kprobe")),
    pytest.param("fentry", marks=pytest.mark.requires_kernel("fentry"))])
def test_function_backends_echo_and_nf_drop(hosts: netlab.TwoHosts, backend: str) -> None:
    """Echo through the IP functions with nf_hook_slow verdicts; then an nft DROP at input gives
    nf_hook_slow LOCAL_IN DROP and a kfree_skb event with reason NETFILTER_DROP."""
    netfilter_drop = KBTF.enum_values("skb_drop_reason")["SKB_DROP_REASON_NETFILTER_DROP"]
    netlab.nft(hosts.server, "table inet nbp {\n chain inp {\n type filter hook input priority 0;\n"
                             " icmp type echo-request counter\n }\n}\n")
    with FuncRig(hosts, backend) as rig:
        needed = [p for p in rig.coll.programs if p.split("_", 1)[1] in (
            "ip_output", "dev_queue_xmit", "ip_rcv", "ip_local_deliver", "nf_hook_slow", "icmp_rcv")]
        assert len(needed) == 7 and not set(needed) & set(rig.skipped), rig.skipped
        netlab.ping(hosts.client, hosts.server_ip, count=1)
        evs = rig.events()
        ident = ping_id(evs, 8)
        names = [where(e) for e in echo_path(evs, 8, ident)]
        assert_subsequence(names, ["ip_output", "dev_queue_xmit", "ip_rcv", "ip_local_deliver",
                                   "nf_hook_slow/LOCAL_IN/ACCEPT", "icmp_rcv"])
        netlab.nft(hosts.server, "table inet nbp {\n chain inp {\n icmp type echo-request drop\n }\n}\n")
        netlab.ping(hosts.client, hosts.server_ip, count=1, timeout=1, expect_reply=False)
        evs = rig.events()
    ident = ping_id(evs, 8)
    mine = [e for e in evs if e.icmp_type == 8 and e.icmp_id == ident]
    names = [where(e) for e in mine]
    assert_subsequence(names, ["ip_rcv", "ip_local_deliver", "kfree_skb", "nf_hook_slow/LOCAL_IN/DROP"])
    assert "icmp_rcv" not in names
    drop = next(e for e in mine if e.hook == abi.NbHook.KFREE_SKB)
    assert drop.drop_reason == netfilter_drop and drop.location and drop.stack
