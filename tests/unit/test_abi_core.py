"""Every CO-RE relocation of bpf/prebuilt/netbee.bpf.o resolves (none poisoned) against the kernels
NetBee supports: this machine's, Debian 6.1 and Debian 6.12 (BTF from tests/vm/kernels.py).

Catches local type definitions in bpf/src/kernel_types.h that do not match a real kernel (a field
name the kernel does not have turns into a poisoned instruction that the verifier rejects only
at load time, on that kernel)."""
from __future__ import annotations

import functools
import pathlib

import pytest

from netbee.loader import core
from netbee.loader.btf import Btf
from netbee.loader.elf import ObjectSpec

OBJ = pathlib.Path(__file__).resolve().parents[2] / "bpf" / "prebuilt" / "netbee.bpf.o"


@functools.lru_cache(maxsize=None)
def target_btf(which: str) -> Btf:
    if which == "host":
        return Btf.load_kernel()
    from tests.vm import kernels
    return Btf.parse(kernels.kernel_btf(which))


@pytest.mark.parametrize("which", ["host", "6.1", "6.12"])
def test_no_poisoned_relocation(which: str) -> None:
    spec = ObjectSpec.from_path(str(OBJ))
    kbtf = target_btf(which)
    cache: dict = {}
    bad = []
    # BPF netfilter programs exist from 6.4 on: on older kernels they are never loaded
    nf_ok = bool(kbtf.find("bpf_nf_ctx"))
    assert nf_ok == (which != "6.1")
    for name, prog in sorted(spec.programs.items()):
        if prog.kind == "netfilter" and not nf_ok:
            continue
        for fx in core.relocate(name, prog.core_relos, spec.btf, kbtf, cache):
            if fx.poison:
                bad.append(fx.reason)
    assert not bad, "\n".join(bad)


def test_netfilter_drop_reason_is_relocated() -> None:
    """The bracket compares against SKB_DROP_REASON_NETFILTER_DROP through bpf_core_enum_value,
    so the number comes from each kernel's BTF, not from our placeholder."""
    spec = ObjectSpec.from_path(str(OBJ))
    prog = spec.programs["tp_kfree_skb"]
    enum_relos = [r for r in prog.core_relos if r.kind == core.CoreReloKind.ENUMVAL_VALUE]
    assert enum_relos, "tp_kfree_skb has no enum value relocation"
    for which in ("host", "6.1", "6.12"):
        kbtf = target_btf(which)
        want = kbtf.enum_values("skb_drop_reason")["SKB_DROP_REASON_NETFILTER_DROP"]
        fixes = [fx for fx in core.relocate("tp_kfree_skb", enum_relos, spec.btf, kbtf)]
        assert {fx.target_value for fx in fixes} == {want}, which


@pytest.mark.parametrize("which", ["host", "6.1", "6.12"])
def test_hook_table_targets_exist_in_kernel_btf(which: str) -> None:
    """hooks.py against real kernels: every tp_btf target has its btf_trace_<name> type, and every
    kprobe/fentry hook has at least one symbol candidate that is a BTF function (what fentry needs;
    the tracer also checks kallsyms at run time). KFREE_SKB's kprobe alternatives are per kernel:
    one of them must resolve."""
    from netbee import hooks
    from netbee.loader.btf import BtfKind

    kbtf = target_btf(which)
    missing = []
    for h in hooks.HOOKS:
        for backend, alts in h.backends.items():
            usable = []
            for alt in alts:
                ok = True
                for t in alt:
                    if t.kind == "tp_btf":
                        ok &= bool(kbtf.find("btf_trace_" + t.symbols[0]))
                    elif t.kind in ("kprobe", "kretprobe", "fentry", "fexit"):
                        ok &= any(kbtf.find(s, BtfKind.FUNC) for s in t.symbols)
                    elif t.kind == "netfilter":
                        ok &= bool(kbtf.find("bpf_nf_ctx"))
                usable.append(ok)
            if not any(usable) and not (backend == "tracepoint" and which == "6.1"):
                missing.append(f"{h.key}/{backend}")
    assert not missing, missing
