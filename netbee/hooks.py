"""The hook table: every place NetBee can watch, and how each backend attaches there.

For each hook (enum nb_hook id) the table gives its display name, layer and direction, and per
backend ("kprobe", "fentry", "tracepoint") a tuple of ALTERNATIVES in order of preference. An
alternative is a tuple of Targets attached together (nf_hook_slow needs its entry and its return
program). The tracer takes the first alternative whose every Target resolves on the running kernel:

- kind "kprobe"/"kretprobe": the first of `symbols` present in /proc/kallsyms (exact name);
- kind "fentry"/"fexit": the first of `symbols` present in kallsyms AND as a BTF FUNC in the
  kernel's BTF (the verifier needs the function's BTF);
- kind "tp_btf": symbols[0] is the tracepoint name (BTF type btf_trace_<name> must exist);
- kind "netfilter": attached per network namespace, per pf (IPv4, IPv6) and per netfilter hook
  (all five) at `priority`; see NF_BRACKET_ENTRY_PRIORITY / NF_BRACKET_EXIT_PRIORITY.

A hook with no entry for a backend is not observable with it (the tracer reports it as skipped).
The program's section names carry a generic target; the tracer overrides the attach target with
the symbol it picked (Collection overrides={"prog": {"attach_target": symbol}}).

Notes for the tracer:
- NETIF_RECEIVE_SKB and NET_DEV_START_XMIT use tracepoints on every backend: they exist on
  every supported kernel and cost less than a kprobe.
- KFREE_SKB with the fentry backend also uses tp_btf/kfree_skb: it gives the freeing location,
  which an fentry program cannot read.
- The tracepoint backend's netfilter bracket (NF_BRACKET) needs KFREE_SKB (tp_kfree_skb) loaded
  too, or drops inside a hook are reported only later as STOLEN; its own group already includes
  tp_consume_skb (packets taken by a hook, e.g. fragments during defragmentation).
- Symbols are tried in order: e.g. ip_rcv_core before ip_rcv because it is reached from both
  ip_rcv and ip_list_rcv (the GRO list path never calls ip_rcv).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from netbee.abi import NbHook
from netbee.loader.record import FrozenRecord, Record

BACKENDS = ("fentry", "kprobe", "tracepoint")
LAYERS = ("dev", "ip", "l4", "nf", "drop")

# INT_MIN and INT_MAX are refused by the kernel (ERANGE); one step inward works.
NF_BRACKET_ENTRY_PRIORITY = -(2 ** 31) + 1
NF_BRACKET_EXIT_PRIORITY = 2 ** 31 - 2
NF_PF_IPV4 = 2
NF_PF_IPV6 = 10

# enum nf_inet_hooks, the values in nb_event.nf_hook
NF_HOOK_NAMES = ("PRE_ROUTING", "LOCAL_IN", "FORWARD", "LOCAL_OUT", "POST_ROUTING")
# nb_event.verdict (NB_VERDICT_*); STOLEN also stands for "queued" when the two cannot be told apart
VERDICT_NAMES = {0: "DROP", 1: "ACCEPT", 2: "STOLEN", 3: "QUEUE"}


class Target(FrozenRecord):
    """One program and where it attaches."""
    __slots__ = ("program", "kind", "symbols", "priority")

    def __init__(self, program: str,
                 kind: str, symbols: Tuple[str, ...] = (), priority: Optional[int] = None) -> None:
        self.program = program
        self.kind = kind   # ProgramSpec.kind of the program
        self.symbols = symbols   # candidates in order; tp_btf: (tracepoint name,)
        self.priority = priority   # netfilter only


Alternative = Tuple[Target, ...]


class Hook(Record):
    __slots__ = ("id", "key", "func", "layer", "direction", "family", "backends", "tracepoint")

    def __init__(self, id: int,
                 key: str, func: str, layer: str, direction: str, family: int,
                 backends: Optional[Dict[str, Tuple[Alternative, ...]]] = None,
                 tracepoint: Optional[str] = None) -> None:
        self.id = id
        self.key = key   # NB_HOOK_<key>
        self.func = func   # display name
        self.layer = layer   # dev / ip / l4 / nf / drop
        self.direction = direction   # rx / tx / any
        self.family = family   # 4 or 6 when the hook is family-specific, else 0
        self.backends = {} if backends is None else backends
        self.tracepoint = tracepoint   # "net:netif_receive_skb" when a tracepoint backs it

    __eq__ = object.__eq__   # each one is itself: compared and hashed by identity
    __hash__ = object.__hash__

    def alternatives(self, backend: str) -> Tuple[Alternative, ...]:
        """Alternatives for backend, best first; empty when the backend cannot observe this hook."""
        return self.backends.get(backend, ())


def _kp(name: str, *symbols: str) -> Tuple[Alternative, ...]:
    return ((Target("kp_" + name, "kprobe", symbols or (name,)),),)


def _fe(name: str, *symbols: str) -> Tuple[Alternative, ...]:
    return ((Target("fe_" + name, "fentry", symbols or (name,)),),)


def _tp(prog: str, tracepoint: str) -> Tuple[Alternative, ...]:
    return ((Target(prog, "tp_btf", (tracepoint,)),),)


def _fn(hid: NbHook, func: str, layer: str, direction: str, family: int, *symbols: str) -> Hook:
    """A kernel function observed by kprobe and fentry (no tracepoint)."""
    return Hook(int(hid), hid.name, func, layer, direction, family,
                {"kprobe": _kp(func, *symbols), "fentry": _fe(func, *symbols)})


def _everywhere_tp(hid: NbHook, func: str, layer: str, direction: str, prog: str, tp: str) -> Hook:
    """A hook backed by a tracepoint on every backend."""
    alts = _tp(prog, tp)
    return Hook(int(hid), hid.name, func, layer, direction, 0,
                {"kprobe": alts, "fentry": alts, "tracepoint": alts}, tracepoint="net:" + tp)


_NF_BRACKET = (
    Target("nf_entry", "netfilter", priority=NF_BRACKET_ENTRY_PRIORITY),
    Target("nf_exit", "netfilter", priority=NF_BRACKET_EXIT_PRIORITY),
    Target("tp_consume_skb", "tp_btf", ("consume_skb",)),
)

HOOKS: Tuple[Hook, ...] = (
    Hook(int(NbHook.NETIF_RX), "NETIF_RX", "netif_rx", "dev", "rx", 0,
         {"kprobe": _kp("netif_rx", "netif_rx_internal", "__netif_rx", "netif_rx"),
          "fentry": _fe("netif_rx", "netif_rx_internal", "__netif_rx", "netif_rx"),
          "tracepoint": _tp("tp_netif_rx", "netif_rx")}, tracepoint="net:netif_rx"),
    _everywhere_tp(NbHook.NETIF_RECEIVE_SKB, "netif_receive_skb", "dev", "rx",
                   "tp_netif_receive_skb", "netif_receive_skb"),
    _fn(NbHook.IP_RCV, "ip_rcv", "ip", "rx", 4, "ip_rcv_core", "ip_rcv"),
    _fn(NbHook.IP_LOCAL_DELIVER, "ip_local_deliver", "ip", "rx", 4),
    _fn(NbHook.IP_FORWARD, "ip_forward", "ip", "rx", 4),
    _fn(NbHook.TCP_V4_RCV, "tcp_v4_rcv", "l4", "rx", 4),
    _fn(NbHook.UDP_RCV, "udp_rcv", "l4", "rx", 4),
    _fn(NbHook.ICMP_RCV, "icmp_rcv", "l4", "rx", 4),
    _fn(NbHook.TCP_TRANSMIT_SKB, "tcp_transmit_skb", "l4", "tx", 0, "__tcp_transmit_skb", "tcp_transmit_skb"),
    _fn(NbHook.IP_QUEUE_XMIT, "ip_queue_xmit", "ip", "tx", 4, "__ip_queue_xmit", "ip_queue_xmit"),
    Hook(int(NbHook.DEV_QUEUE_XMIT), "DEV_QUEUE_XMIT", "dev_queue_xmit", "dev", "tx", 0,
         {"kprobe": _kp("dev_queue_xmit", "__dev_queue_xmit", "dev_queue_xmit"),
          "fentry": _fe("dev_queue_xmit", "__dev_queue_xmit", "dev_queue_xmit"),
          "tracepoint": _tp("tp_net_dev_queue", "net_dev_queue")}, tracepoint="net:net_dev_queue"),
    _everywhere_tp(NbHook.NET_DEV_START_XMIT, "net_dev_start_xmit", "dev", "tx",
                   "tp_net_dev_start_xmit", "net_dev_start_xmit"),
    Hook(int(NbHook.NF_HOOK_SLOW), "NF_HOOK_SLOW", "nf_hook_slow", "nf", "any", 0,
         {"kprobe": ((Target("kp_nf_hook_slow", "kprobe", ("nf_hook_slow",)),
                      Target("kr_nf_hook_slow", "kretprobe", ("nf_hook_slow",))),),
          "fentry": ((Target("fe_nf_hook_slow", "fentry", ("nf_hook_slow",)),
                      Target("fx_nf_hook_slow", "fexit", ("nf_hook_slow",))),)}),
    Hook(int(NbHook.NF_BRACKET), "NF_BRACKET", "netfilter", "nf", "any", 0,
         {"tracepoint": (_NF_BRACKET,)}),
    Hook(int(NbHook.KFREE_SKB), "KFREE_SKB", "kfree_skb", "drop", "any", 0,
         {"kprobe": ((Target("kp_sk_skb_reason_drop", "kprobe", ("sk_skb_reason_drop",)),),
                     (Target("kp_kfree_skb_reason", "kprobe", ("kfree_skb_reason",)),)),
          "fentry": _tp("tp_kfree_skb", "kfree_skb"),
          "tracepoint": _tp("tp_kfree_skb", "kfree_skb")}, tracepoint="skb:kfree_skb"),
    _fn(NbHook.IPV6_RCV, "ipv6_rcv", "ip", "rx", 6, "ip6_rcv_core", "ipv6_rcv"),
    _fn(NbHook.IP6_INPUT, "ip6_input", "ip", "rx", 6),
    _fn(NbHook.IP6_FORWARD, "ip6_forward", "ip", "rx", 6),
    _fn(NbHook.TCP_V6_RCV, "tcp_v6_rcv", "l4", "rx", 6),
    _fn(NbHook.UDPV6_RCV, "udpv6_rcv", "l4", "rx", 6),
    _fn(NbHook.ICMPV6_RCV, "icmpv6_rcv", "l4", "rx", 6),
    _fn(NbHook.IP6_XMIT, "ip6_xmit", "ip", "tx", 6),
    _fn(NbHook.IP_OUTPUT, "ip_output", "ip", "tx", 4),
    _fn(NbHook.IP6_OUTPUT, "ip6_output", "ip", "tx", 6),
)

BY_ID: Dict[int, Hook] = {h.id: h for h in HOOKS}
BY_KEY: Dict[str, Hook] = {h.key: h for h in HOOKS}
FUNC_NAMES: Dict[int, str] = {h.id: h.func for h in HOOKS}


def hook_name(hook_id: int) -> str:
    """Display name of a hook id ("ip_rcv"); unknown ids as "hook#N"."""
    name = FUNC_NAMES.get(hook_id)
    return name if name is not None else f"hook#{hook_id}"


def nf_hook_name(nf_hook: int) -> str:
    return NF_HOOK_NAMES[nf_hook] if 0 <= nf_hook < len(NF_HOOK_NAMES) else f"nf#{nf_hook}"


def verdict_name(verdict: int) -> str:
    return VERDICT_NAMES.get(verdict, f"verdict#{verdict}")


def hooks_for(backend: str) -> List[Hook]:
    """Hooks that backend can observe, in id order."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}")
    return [h for h in HOOKS if h.alternatives(backend)]


def programs_for(backend: str) -> List[str]:
    """Every program name any alternative of backend may use (to load a subset)."""
    out: List[str] = []
    for h in hooks_for(backend):
        for alt in h.alternatives(backend):
            for t in alt:
                if t.program not in out:
                    out.append(t.program)
    return out
