"""Collection._load_programs without a kernel: programs go to the verifier in parallel threads,
land in request order, and a failure raises the first error in that order with the rest closed.

The kernel side is replaced by fakes: Collection subclasses skip the object BTF and maps, and
_prepare_program/_load_prepared stand in for CO-RE and bpf(BPF_PROG_LOAD).
"""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from netbee.loader import collection
from netbee.loader.collection import Collection, load_workers
from netbee.loader.errors import ObjectFileError, VerifierError


class FakeProgram:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False
        self.thread = threading.current_thread().name

    def close(self) -> None:
        self.closed = True


def _spec(names, sizes=None):
    """Programs of equal length unless sizes (name -> instruction count) says otherwise."""
    progs = {n: SimpleNamespace(name=n, insns=b"\0" * 8 * (sizes or {}).get(n, 1)) for n in names}
    return SimpleNamespace(programs=progs, btf=None, maps={}, license="GPL")


class FakeCollection(Collection):
    """Loads FakePrograms; `gate` (if set) runs inside every load, `fail` maps name -> exception."""

    gate = None
    fail: dict = {}
    fail_prepare: dict = {}
    made: list = []
    prepared: list = []

    def _load_btf(self, features, sanitized=None) -> None:
        pass

    def _create_maps(self, sizes) -> None:
        pass

    def _prepare_program(self, pspec, override, cand_cache):
        type(self).prepared.append(pspec.name)
        if pspec.name in self.fail_prepare:
            raise self.fail_prepare[pspec.name]
        return SimpleNamespace(spec=pspec)

    def _load_prepared(self, p, log_level):
        if self.gate is not None:
            self.gate(p.spec.name)
        if p.spec.name in self.fail:
            raise self.fail[p.spec.name]
        prog = FakeProgram(p.spec.name)
        type(self).made.append(prog)
        return prog


@pytest.fixture()
def fake(monkeypatch):
    class C(FakeCollection):
        made: list = []
        prepared: list = []
        fail: dict = {}
        fail_prepare: dict = {}
    monkeypatch.setattr(collection, "load_workers", lambda n: min(n, 2))
    return C


def test_two_programs_are_in_the_verifier_at_the_same_time(fake):
    # Sequential loading would leave one thread alone at the barrier until it breaks.
    barrier = threading.Barrier(2, timeout=10)
    fake.gate = staticmethod(lambda name: barrier.wait())
    coll = fake(_spec(["a", "b", "c", "d"]))
    assert list(coll.programs) == ["a", "b", "c", "d"]
    threads = {p.thread for p in coll.programs.values()}
    assert len(threads) == 2 and all(t.startswith("netbee-load") for t in threads), threads


def test_the_longest_programs_go_to_the_verifier_first_and_land_in_request_order(fake):
    coll = fake(_spec(["a", "b", "c", "d"], {"a": 10, "b": 400, "c": 3000, "d": 400}))
    assert fake.prepared == ["c", "b", "d", "a"]
    assert list(coll.programs) == ["a", "b", "c", "d"]


def test_programs_quick_to_relocate_go_first(fake):
    """The first CO-RE relocation is the dearest: a program with next to none goes to the
    verifier while it runs."""
    spec = _spec(["a", "b", "c", "d"], {"a": 10, "b": 400, "c": 3000, "d": 50})
    for name, relos in (("a", 0), ("b", 30), ("c", 30), ("d", 1)):
        spec.programs[name].core_relos = [object()] * relos
    coll = fake(spec)
    assert fake.prepared == ["d", "a", "c", "b"]
    assert list(coll.programs) == ["a", "b", "c", "d"]


def test_first_failure_in_program_order_is_raised_and_the_rest_closed(fake):
    c_started = threading.Event()

    def gate(name: str) -> None:
        # "b" fails only after "c" has failed: completion order differs from program order
        if name == "c":
            c_started.set()
        elif name == "b":
            assert c_started.wait(10)
            time.sleep(0.05)

    fake.gate = staticmethod(gate)
    fake.fail = {"b": VerifierError("b", "R1 invalid mem access\n"), "c": VerifierError("c", "other\n")}
    with pytest.raises(VerifierError) as ei:
        fake(_spec(["a", "b", "c", "d"]))
    assert ei.value.program == "b" and "R1 invalid mem access" in ei.value.log
    assert sorted(p.name for p in fake.made) == ["a", "d"]
    assert all(p.closed for p in fake.made)


def test_a_program_that_fails_to_prepare_stops_the_later_ones(fake):
    fake.fail_prepare = {"c": ObjectFileError("program 'c' uses unknown map 'x'")}
    with pytest.raises(ObjectFileError, match="unknown map"):
        fake(_spec(["a", "b", "c", "d"]))
    assert fake.prepared == ["a", "b", "c"]
    assert sorted(p.name for p in fake.made) == ["a", "b"] and all(p.closed for p in fake.made)


def test_an_earlier_load_failure_wins_over_a_later_preparation_failure(fake):
    fake.fail = {"a": VerifierError("a", "bad\n")}
    fake.fail_prepare = {"c": ObjectFileError("c")}
    with pytest.raises(VerifierError) as ei:
        fake(_spec(["a", "b", "c"]))
    assert ei.value.program == "a"
    assert [p.name for p in fake.made] == ["b"] and fake.made[0].closed


def test_one_cpu_loads_in_the_calling_thread(fake, monkeypatch):
    monkeypatch.setattr(collection, "load_workers", lambda n: 1)
    coll = fake(_spec(["a", "b"]))
    assert {p.thread for p in coll.programs.values()} == {threading.current_thread().name}


def test_load_workers_follow_the_cpus_this_process_may_use(monkeypatch):
    monkeypatch.setattr(collection.os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert load_workers(10) == 3
    assert load_workers(2) == 2
    assert load_workers(0) == 1
    monkeypatch.setattr(collection.os, "sched_getaffinity", lambda pid: {5})
    assert load_workers(10) == 1


def test_ctrl_c_while_preparing_starts_nothing_new_and_closes_what_loaded(fake):
    fake.fail_prepare = {"c": KeyboardInterrupt()}
    with pytest.raises(KeyboardInterrupt):
        fake(_spec(["a", "b", "c", "d"]))
    assert fake.prepared == ["a", "b", "c"]
    assert {p.name for p in fake.made} <= {"a", "b"} and all(p.closed for p in fake.made)
    assert not [t for t in threading.enumerate() if t.name.startswith("netbee-load")]
