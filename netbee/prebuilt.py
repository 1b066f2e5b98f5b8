"""Where the prebuilt BPF object is (a module of its own: the command looks for it before it
imports the tracer, to start reading it in a child at once)."""
from __future__ import annotations

import os

from netbee.loader.errors import NetBeeError


def default_object_path() -> str:
    """The prebuilt object: $NETBEE_BPF_OBJECT (development), bpf/prebuilt/ in a source tree,
    netbee/bpf/ when installed."""
    env = os.environ.get("NETBEE_BPF_OBJECT")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    for cand in (os.path.join(here, "bpf", "netbee.bpf.o"),
                 os.path.join(os.path.dirname(here), "bpf", "prebuilt", "netbee.bpf.o")):
        if os.path.exists(cand):
            return cand
    raise NetBeeError("prebuilt BPF object netbee.bpf.o not found (run scripts/build_bpf.sh)")
