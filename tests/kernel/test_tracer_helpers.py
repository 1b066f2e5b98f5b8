"""The tracer's kernel-free decisions: backend choice, kallsyms lookup, bracket priorities, blind spots."""
from __future__ import annotations

import errno
import json

import pytest

from netbee import tracer
from netbee.loader.errors import AttachError, NotSupportedError, SyscallError
from netbee.resolvers.kallsyms import SymbolNames


@pytest.mark.parametrize("fentry,kprobe,want", [
    (True, True, "fentry"), (False, True, "kprobe"), (False, False, "tracepoint"), (True, False, "fentry")])
def test_auto_backend_prefers_fentry_then_kprobe(fentry, kprobe, want):
    assert tracer.choose_backend("auto", fentry, kprobe) == want


def test_forced_backend_refused_when_impossible():
    with pytest.raises(NotSupportedError, match="fentry"):
        tracer.choose_backend("fentry", False, True)
    with pytest.raises(NotSupportedError, match="kprobe"):
        tracer.choose_backend("kprobe", True, False)
    assert tracer.choose_backend("tracepoint", True, True) == "tracepoint"
    with pytest.raises(NotSupportedError):
        tracer.choose_backend("ebpf", True, True)


KALLSYMS = b"""ffffffff81e634f0 T __dev_queue_xmit
ffffffff81e64e60 t __netif_receive_skb_core.constprop.0
ffffffff81ff6a80 T ip_rcv
ffffffff81ff6b00 T ip_rcv_core
ffffffffc0a01000 t nft_do_chain\t[nf_tables]
"""


def test_kallsyms_lookup_exact_clone_and_module():
    ks = SymbolNames(KALLSYMS)
    assert ks.lookup("ip_rcv") == "ip_rcv"           # not fooled by ip_rcv_core
    assert ks.lookup("ip_rcv_co") is None
    assert ks.lookup("__netif_receive_skb_core") == "__netif_receive_skb_core.constprop.0"
    assert ks.lookup("nft_do_chain") == "nft_do_chain"
    assert ks.lookup("kfree_skb_reason") is None


def test_kallsyms_real_file():
    ks = SymbolNames.load()
    assert ks.lookup("nf_hook_slow") == "nf_hook_slow"


def _busy() -> SyscallError:
    return SyscallError("BPF_LINK_CREATE", errno.EBUSY)


def test_bracket_steps_inward_on_ebusy():
    tried = []

    def attach(prio):
        tried.append(prio)
        if len(tried) < 3:
            raise AttachError("nf", "busy") from _busy()
        return "link"
    assert tracer.bracket_attach(attach, tracer.BRACKET_ENTRY_PRIO, 1) == ("link", tracer.INT_MIN + 3)
    assert tried == [tracer.INT_MIN + 1, tracer.INT_MIN + 2, tracer.INT_MIN + 3]
    tried.clear()
    assert tracer.bracket_attach(attach, tracer.BRACKET_EXIT_PRIO, -1)[1] == tracer.INT_MAX - 3


def test_bracket_other_errors_are_raised_at_once():
    def attach(prio):
        raise SyscallError("BPF_LINK_CREATE", errno.EPERM)
    with pytest.raises(SyscallError):
        tracer.bracket_attach(attach, 0, 1)


def test_bracket_gives_up_after_max_steps():
    def attach(prio):
        raise _busy()
    with pytest.raises(AttachError, match="taken"):
        tracer.bracket_attach(attach, 0, 1, max_steps=4)


NFT_JSON = json.dumps({"nftables": [
    {"metainfo": {"version": "1.0.6"}},
    {"chain": {"family": "inet", "table": "t", "name": "early", "hook": "input", "prio": -2147483647}},
    {"chain": {"family": "ip", "table": "t", "name": "filt", "hook": "input", "prio": 0}},
    {"chain": {"family": "ip6", "table": "t", "name": "late", "hook": "postrouting", "prio": 2147483647}},
    {"chain": {"family": "netdev", "table": "n", "name": "ing", "hook": "ingress", "prio": 0}},
    {"chain": {"family": "ip", "table": "t", "name": "regular"}},
]})


def test_parse_nft_chains_keeps_base_chains():
    chains = tracer.parse_nft_chains(NFT_JSON)
    assert [c.name for c in chains] == ["early", "filt", "late", "ing"]
    assert chains[0].prio == tracer.INT_MIN + 1


def test_blind_spots_outside_bracket():
    chains = tracer.parse_nft_chains(NFT_JSON)
    # The bracket had to step inward at LOCAL_IN because "early" holds INT_MIN+1.
    brackets = {(pf, h): (tracer.BRACKET_ENTRY_PRIO, tracer.BRACKET_EXIT_PRIO)
                for pf in (2, 10) for h in range(5)}
    brackets[(2, 1)] = brackets[(10, 1)] = (tracer.INT_MIN + 2, tracer.BRACKET_EXIT_PRIO)
    spots = tracer.blind_spots(chains, brackets, "x")
    assert len(spots) == 3
    assert "early" in spots[0] and "before the entry" in spots[0]
    assert "late" in spots[1] and "after the exit" in spots[1]
    assert "ing" in spots[2] and "not bracketed" in spots[2]
    assert not any("filt" in s for s in spots)


def test_bad_nft_output_is_an_error():
    with pytest.raises(tracer.NetBeeError):
        tracer.parse_nft_chains("not json")


def _kernel_btf():
    from netbee.loader.btf import Btf
    return Btf.load_kernel()


def test_plan_picks_the_symbol_this_kernel_has():
    # On 6.18 kfree_skb_reason is inlined and dev_queue_xmit is a stub around __dev_queue_xmit.
    plan, skipped = tracer.plan_hooks("kprobe", _kernel_btf(), SymbolNames.load())
    targets = {p.prog: p.target for p in plan}
    ks = SymbolNames.load()
    assert targets["kp_dev_queue_xmit"] == "__dev_queue_xmit"
    if ks.lookup("kfree_skb_reason") is None:
        assert targets["kp_sk_skb_reason_drop"] == "sk_skb_reason_drop"
        assert "kp_kfree_skb_reason" not in targets
    assert targets["kr_nf_hook_slow"] == targets["kp_nf_hook_slow"] == "nf_hook_slow"
    assert skipped == []


def test_plan_reports_every_hook_it_cannot_place():
    plan, skipped = tracer.plan_hooks("kprobe", _kernel_btf(), SymbolNames(b""))
    # Only tracepoint-backed hooks remain; every kernel-function hook is skipped, with the names tried.
    assert {p.kind for p in plan} == {"tp_btf"}
    reasons = dict(skipped)
    assert "__dev_queue_xmit (not in kallsyms" in reasons["dev_queue_xmit"]
    assert "kfree_skb_reason" in reasons["kfree_skb"] and "sk_skb_reason_drop" in reasons["kfree_skb"]


def test_plan_fentry_refuses_compiler_clones_kprobe_takes_them():
    ks = SymbolNames(b"ffffffff81ff6000 t ip_rcv_core.isra.0\nffffffff81ff6a80 T ip_rcv\n")
    kbtf = _kernel_btf()
    fentry = {p.prog: p.target for p in tracer.plan_hooks("fentry", kbtf, ks)[0]}
    kprobe = {p.prog: p.target for p in tracer.plan_hooks("kprobe", kbtf, ks)[0]}
    # A clone has no BTF FUNC of its own, so fentry falls back to the next candidate.
    assert fentry["fe_ip_rcv"] == "ip_rcv"
    assert kprobe["kp_ip_rcv"] == "ip_rcv_core.isra.0"


def test_plan_tracepoint_backend_brackets_netfilter():
    plan, skipped = tracer.plan_hooks("tracepoint", _kernel_btf(), None)
    nf = [p for p in plan if p.kind == "netfilter"]
    assert sorted(p.priority for p in nf) == [tracer.BRACKET_ENTRY_PRIO, tracer.BRACKET_EXIT_PRIO]
    assert {p.prog for p in plan} >= {"tp_kfree_skb", "tp_consume_skb", "tp_net_dev_queue"}
    assert skipped == []
