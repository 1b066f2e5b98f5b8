"""Feature probes against the running kernel, cross-checked with the harness's independent probes."""
from __future__ import annotations

import pytest

from netbee.loader import features as F
from tests import kernel_features

pytestmark = pytest.mark.kernel


@pytest.mark.parametrize("feature", ["kprobe", "tracefs_kprobe", "fentry", "kprobe_multi"])
def test_agrees_with_independent_probe(feature: str) -> None:
    ours = F.has(feature)
    theirs = kernel_features.CHECKS[feature]()  # the harness's own ctypes/sysfs check, not ours
    assert ours[0] == theirs[0], (ours, theirs)
    assert ours[1]


def test_things_this_project_relies_on_everywhere() -> None:
    for name in ("tp_btf", "raw_tp", "tracepoint", "ringbuf", "btf"):
        ok, why = F.has(name)
        assert ok, f"{name}: {why}"


def test_helper_probe_says_no_when_the_verifier_does() -> None:
    assert F.helper("ringbuf_output")[0] is True
    ok, why = F.helper("skb_load_bytes", "raw_tp")
    assert ok is False and ("func" in why or "helper" in why), why


def test_table_rows_and_cache() -> None:
    rows = F.probe_table()
    names = [r[0] for r in rows]
    assert len(names) == len(set(names))
    assert all(isinstance(ok, bool) and detail for _, ok, detail in rows)
    table = dict((n, ok) for n, ok, _ in rows)
    assert table["attach: kprobe (any way)"] == F.has("kprobe")[0]
    assert table["program type: tracing (fentry)"] == F.has("fentry")[0]
    assert table["map type: ringbuf"] and table["program type: netfilter"]
    assert F.probe_table() == rows  # cached: same answers, no new probing


def test_btf_features_drive_sanitize() -> None:
    from netbee.loader.btf import FEATURES
    feats = F.btf_features()
    assert feats <= FEATURES and "func" in feats and "datasec" in feats


def test_memlock_not_needed_with_memcg_accounting() -> None:
    # every kernel we run on (6.1, 6.12, this one) has memcg accounting; nothing to raise
    assert F.memcg_accounting() is True
    assert F.ensure_memlock().startswith("not needed")


def test_memlock_failure_message_is_clear(monkeypatch) -> None:
    from netbee.loader import syscall as sc
    from netbee.loader.errors import NotSupportedError, SyscallError

    monkeypatch.setattr(F, "memcg_accounting", lambda: False)

    def refuse(limit: int) -> None:
        raise SyscallError("setrlimit(RLIMIT_MEMLOCK)", 1)
    monkeypatch.setattr(sc, "setrlimit_memlock", refuse)
    with pytest.raises(NotSupportedError) as ei:
        F.ensure_memlock()
    assert "RLIMIT_MEMLOCK" in str(ei.value) and "ulimit -l" in str(ei.value)


def test_direct_packet_reads_is_the_verifiers_answer_without_attaching(monkeypatch) -> None:
    # the kernel's answer, with tp_btf's attach probe and every attach forbidden: a load decides
    from netbee.loader import links

    def no_attach(*a, **kw):
        raise AssertionError("the probe attached something")
    F.direct_packet_reads.cache_clear()
    F.tp_btf.cache_clear()
    monkeypatch.setattr(links, "attach", no_attach)
    monkeypatch.setattr(F, "tp_btf", no_attach)
    ok, why = F.direct_packet_reads()
    assert why and (ok is True or why.startswith("refused: ")), why
    # and the same answer once attaching is allowed again
    monkeypatch.undo()
    F.direct_packet_reads.cache_clear()
    assert F.direct_packet_reads() == (ok, why)
