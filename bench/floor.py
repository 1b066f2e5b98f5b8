"""Load the floor (bench/floor.bpf.c) with netbee's own loader and attach it where netbee attaches.

The floor mirrors netbee's tracepoint backend: one tp_btf program per
tracepoint netbee uses, and a netfilter program linked at the entry and exit
priorities of every hook, both families, in each namespace netbee watches.
"""
from __future__ import annotations

import errno
from typing import List, Sequence

from bench import build
from bench.lab import SetUpOnEnter
from netbee.loader import links
from netbee.loader.btf import Btf
from netbee.loader.elf import ObjectSpec
from netbee.loader.errors import AttachError, SyscallError
from netbee.loader.programs import Program, resolve_attach_btf_id

# The tracepoints netbee's tracepoint backend attaches (bpf/src/netbee.bpf.c, tp_btf/ sections).
NETBEE_TRACEPOINTS = ("netif_receive_skb", "netif_rx", "net_dev_queue", "net_dev_start_xmit",
                      "kfree_skb", "consume_skb")
NF_FAMILIES = (2, 10)
NF_HOOKS = range(5)
ENTRY_PRIO = -(1 << 31) + 1
EXIT_PRIO = (1 << 31) - 2


class Floor(SetUpOnEnter):
    """Programs that return at once, attached to netbee's hooks; closes everything on exit."""

    def __init__(self, netns: Sequence[str], tracepoints: Sequence[str] = NETBEE_TRACEPOINTS) -> None:
        self.netns = list(netns)
        self.tracepoints = list(tracepoints)
        self.programs: List[Program] = []
        self.links: List[links.Link] = []

    def _setup(self) -> None:
        spec = ObjectSpec.from_path(str(build.floor_object()))
        kbtf = Btf.load_kernel()
        by_target = {p.attach_target: p for p in spec.programs.values() if p.kind == "tp_btf"}
        for tp in self.tracepoints:
            ps = by_target[tp]
            prog = Program(ps.name, ps.kind, bytes(ps.insns), license=spec.license,
                           attach_target=tp, attach_btf_id=resolve_attach_btf_id(kbtf, "tp_btf", tp))
            self.programs.append(prog)
            self.links.append(links.attach(prog))
        nf = spec.programs["floor_nf"]
        nf_prog = Program(nf.name, nf.kind, bytes(nf.insns), license=spec.license)
        self.programs.append(nf_prog)
        for ns in self.netns:
            for pf in NF_FAMILIES:
                for hook in NF_HOOKS:
                    self.links.append(_nf_link(nf_prog, pf, hook, ENTRY_PRIO, +1, ns))
                    self.links.append(_nf_link(nf_prog, pf, hook, EXIT_PRIO, -1, ns))

    def close(self) -> None:
        for obj in self.links + self.programs:
            obj.close()
        self.links, self.programs = [], []


def _nf_link(prog: Program, pf: int, hook: int, prio: int, step: int, netns: str) -> links.Link:
    """Like netbee's bracket: step inward while a priority is taken (EBUSY)."""
    for _ in range(64):
        try:
            return links.attach_netfilter(prog, pf, hook, prio, netns=netns)
        except AttachError as e:
            cause = e.__cause__
            if not (isinstance(cause, SyscallError) and cause.errno == errno.EBUSY):
                raise
        prio += step
    raise AttachError(f"netfilter pf={pf} hook={hook}", "64 priorities in a row are taken")
