"""The feature probes share one parse of the kernel BTF: `netbee --probe` must not re-read the
5.5 MB for each probe that looks at it (features does not cache the Btf itself, so that a
running trace does not keep it)."""
from __future__ import annotations

import weakref

import pytest

from netbee.loader import btf as btf_mod
from netbee.loader import features

pytestmark = pytest.mark.kernel


def test_probe_table_reads_the_kernel_btf_once(monkeypatch):
    reads = []
    parse = btf_mod.Btf._from_sections.__func__

    def counting(cls, strings, words, *rest):
        if len(words) * 4 > 1 << 20:   # the kernel's (mapped or read), not a probe's few types
            reads.append(1)
        return parse(cls, strings, words, *rest)

    monkeypatch.setattr(btf_mod.Btf, "_from_sections", classmethod(counting))
    # as in a fresh process: no parse shared with other tests' Btf objects, none deferred
    monkeypatch.setattr(btf_mod, "_PARSED", weakref.WeakValueDictionary())
    monkeypatch.setattr(btf_mod, "_PARSED_OK", set())
    for name in dir(features):   # the probes' results are cached: start from scratch
        fn = getattr(features, name)
        if hasattr(fn, "cache_clear"):
            fn.cache_clear()
    rows = features.probe_table()
    assert rows and len(reads) == 1, len(reads)
