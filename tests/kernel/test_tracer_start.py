"""Tracer.start() on this kernel: what it keeps once running and how it loads.

Start-up memory counts for the command's peak RSS (issue 8, target 6): once the programs are
loaded, the object file and the kernel BTF must be gone (only the drop reason names stay), and
programs go to the verifier from worker threads.
"""
from __future__ import annotations

import os
import threading
import tracemalloc
import weakref

import pytest

from netbee.loader import btf as btf_mod
from netbee.loader import background_parse, btf_index, collection, elf
from netbee.tracer import TraceOptions, Tracer
from tests import netlab

pytestmark = [pytest.mark.kernel, pytest.mark.backend("tracepoint")]


@pytest.fixture
def ns():
    n = netlab.Netns(f"nbs-{os.getpid()}-start").create()
    try:
        yield n
    finally:
        n.delete()


def _opts(ns, backend: str = "auto") -> TraceOptions:
    return TraceOptions(backend=backend, netns=[ns.name])


def test_start_lets_go_of_the_object_and_the_kernel_btf(ns, monkeypatch):
    held: list = []
    load_kernel, from_path = btf_mod.Btf.load_kernel.__func__, elf.ObjectSpec.from_path.__func__

    def loading_kernel(cls, path=None):
        b = load_kernel(cls, path)
        held.append(weakref.ref(b))
        return b

    def parsing(cls, path, programs=None, **kw):
        spec = from_path(cls, path, programs, **kw)
        held.append(weakref.ref(spec))
        return spec

    result = background_parse.BackgroundParse.result

    def parsed_ahead(self):
        spec = result(self)
        held.append(weakref.ref(spec))
        return spec

    monkeypatch.setattr(btf_mod.Btf, "load_kernel", classmethod(loading_kernel))
    monkeypatch.setattr(elf.ObjectSpec, "from_path", classmethod(parsing))
    monkeypatch.setattr(background_parse.BackgroundParse, "result", parsed_ahead)
    import gc

    from netbee.loader import features
    for name in dir(features):   # the probes run as in a fresh process (their results are cached)
        fn = getattr(features, name)
        if hasattr(fn, "cache_clear"):
            fn.cache_clear()
    monkeypatch.setattr(features, "_btf_func_ids", {})
    with Tracer(_opts(ns)) as tr:   # auto: the feature probes look at the kernel BTF too
        # as the command starts: without the cycle collector (a reference cycle holding the
        # kernel BTF, such as a failed probe's traceback, would keep it)
        collecting = gc.isenabled()
        gc.disable()
        try:
            tr.start()
            # the kernel BTF and the object (without the caches, read ahead in a child: what
            # this process holds is the child's answer)
            assert len(held) >= 2
            # no gc.collect(): freed by reference counting, before the ring buffer is mapped
            alive = [type(r()).__name__ for r in held if r() is not None]
        finally:
            if collecting:
                gc.enable()
        assert not alive, f"still referenced after start(): {alive}"

        def no_reparse(*a, **kw):
            raise AssertionError("drop reason names should not need the kernel BTF again")

        monkeypatch.setattr(btf_mod.Btf, "_read", classmethod(no_reparse))
        monkeypatch.setattr(btf_mod.Btf, "parse", classmethod(no_reparse))
        reasons = btf_mod.Btf.kernel_enum_values("skb_drop_reason")
        assert reasons["SKB_DROP_REASON_NO_SOCKET"] > 0
        # what netbee.resolvers.drop_reasons does on the first drop event
        assert btf_mod.Btf.load_kernel().enum_values("skb_drop_reason") == reasons


def test_python_heap_kept_by_a_started_tracer_is_small(ns):
    with Tracer(_opts(ns, "tracepoint")) as tr:   # lazy imports done outside the measurement
        tr.start()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        with Tracer(_opts(ns, "tracepoint")) as tr:
            tr.start()
            held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    # Before: ~15 MiB (line_info records, kernel BTF, object file); now ~0.2 MiB.
    assert held < 2 * 2**20, f"{held / 2**20:.1f} MiB of Python heap held by a started tracer"


def test_programs_are_verified_in_worker_threads(ns, monkeypatch):
    threads: list = []
    load = collection.Collection._load_prepared

    def recording(self, p, log_level):
        threads.append(threading.current_thread().name)
        return load(self, p, log_level)

    monkeypatch.setattr(collection.Collection, "_load_prepared", recording)
    assert collection.load_workers(8) >= 2, "this machine should give the tracer two CPUs"
    with Tracer(_opts(ns, "tracepoint")) as tr:
        tr.start()
        assert len(threads) == len(tr._coll.programs) >= 4
    assert all(t.startswith("netbee-load") for t in threads), threads
    assert len(set(threads)) >= 2, threads


def test_heap_is_trimmed_after_the_release_and_before_the_ring_is_mapped(ns, monkeypatch):
    from netbee.loader import syscall

    order: list = []
    trim, open_reader = syscall.release_free_heap, Tracer._open_reader
    monkeypatch.setattr(syscall, "release_free_heap", lambda: order.append("trim") or trim())
    monkeypatch.setattr(Tracer, "_open_reader", lambda self, coll: order.append("ring") or open_reader(self, coll))
    with Tracer(_opts(ns, "tracepoint")) as tr:
        tr.start()
    assert order == ["trim", "ring"], order


def test_without_caches_the_object_is_read_ahead_in_a_child(ns, monkeypatch):
    forks: list = []
    init = background_parse.BackgroundParse.__init__

    def recording(self, path, kernel_btf=None):
        init(self, path, kernel_btf)
        forks.append(self)

    searched: list = []
    search = btf_index.string_positions

    def searching(strings, base, pattern):
        searched.append(pattern)
        return search(strings, base, pattern)

    whole = btf_index.whole_string_position

    def searching_whole(strings, base, name):
        searched.append(name)
        return whole(strings, base, name)

    sanitized: list = []
    sanitize = btf_mod.sanitize

    def sanitizing(btf, features):
        sanitized.append(btf)
        return sanitize(btf, features)

    monkeypatch.setattr(background_parse.BackgroundParse, "__init__", recording)
    with Tracer(_opts(ns, "tracepoint")) as tr:
        # (the child's searches and sanitize() are its own)
        monkeypatch.setattr(btf_index, "string_positions", searching)
        monkeypatch.setattr(btf_index, "whole_string_position", searching_whole)
        monkeypatch.setattr(btf_mod, "sanitize", sanitizing)
        rep = tr.start()
        assert [p.forked for p in forks] == [True]
        assert forks[0]._pid == 0 and forks[0]._answer_fd < 0   # reaped and closed by start()
        assert "object_fork" in rep.timings and rep.attached
        # CO-RE's and the kfuncs' searches of the kernel's strings were the child's
        known = set(forks[0].kernel_strings[1])
        assert known and not known & set(searched)
        # and so was the object's BTF as this kernel takes it
        assert sanitized == [] and forks[0].object_btf and tr._coll.btf_raw == forks[0].object_btf
    monkeypatch.undo()
    from netbee.loader.features import btf_features
    from netbee.prebuilt import default_object_path
    assert forks[0].object_btf == btf_mod.sanitize(elf.ObjectSpec.from_path(default_object_path()).btf,
                                                   btf_features()).to_bytes()


def test_a_child_started_by_the_caller_is_used_once_and_let_go(ns, monkeypatch):
    """netbee --no-cache forks the object's reader before it imports the tracer: start() takes
    that child's answer instead of forking another, and lets it go; a reader of another file
    is let go unused."""
    from netbee.prebuilt import default_object_path

    forks: list = []
    init = background_parse.BackgroundParse.__init__

    def recording(self, path, kernel_btf=None):
        init(self, path, kernel_btf)
        forks.append(self)

    monkeypatch.setattr(background_parse.BackgroundParse, "__init__", recording)
    given = background_parse.BackgroundParse(default_object_path())
    assert given.forked
    with Tracer(_opts(ns, "tracepoint"), parse_ahead=given) as tr:
        assert tr.start().attached
        assert forks == [given] and given.kernel_strings is not None   # its answer was taken
        assert given._pid == 0 and given._answer_fd < 0

    other = background_parse.BackgroundParse(default_object_path(), "/sys/kernel/btf/../btf/vmlinux")
    assert other.reads(default_object_path(), "/sys/kernel/btf/vmlinux")   # the same file
    unused = background_parse.BackgroundParse(default_object_path(), "/tmp/some/other/btf")
    forks.clear()
    with Tracer(_opts(ns, "tracepoint"), parse_ahead=unused) as tr:
        assert tr.start().attached
        assert len(forks) == 1 and forks[0] is not unused
        assert unused._pid == 0 and unused._answer_fd < 0
    other.close()
    unused_never_started = background_parse.BackgroundParse(default_object_path())
    Tracer(_opts(ns, "tracepoint"), parse_ahead=unused_never_started).close()
    assert unused_never_started._pid == 0
