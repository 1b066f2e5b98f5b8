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
    read = btf_mod.Btf._read.__func__

    def counting(cls, head, f):
        reads.append(1)
        return read(cls, head, f)

    monkeypatch.setattr(btf_mod.Btf, "_read", classmethod(counting))
    # as in a fresh process: no parse shared with other tests' Btf objects, none deferred
    monkeypatch.setattr(btf_mod, "_PARSED", weakref.WeakValueDictionary())
    monkeypatch.setattr(btf_mod, "_PARSED_OK", set())
    for name in dir(features):   # the probes' results are cached: start from scratch
        fn = getattr(features, name)
        if hasattr(fn, "cache_clear"):
            fn.cache_clear()
    rows = features.probe_table()
    assert rows and len(reads) == 1, len(reads)
