"""netbee.loader.features' memo of kernel BTF function ids, without a kernel: a start that was
told the ids (the prepared cache keeps them per kernel) never parses the kernel BTF, and one that
was not learns them from a single parse."""
from __future__ import annotations

import pytest

from netbee.loader import features as F


@pytest.fixture(autouse=True)
def empty_memo(monkeypatch):
    monkeypatch.setattr(F, "_btf_func_ids", {})


class FakeBtf:
    def __init__(self, funcs):
        self.funcs = funcs
        self.asked = []

    def find(self, name, kind):
        self.asked.append(name)
        return [self.funcs[name]] if name in self.funcs else []


def test_remembered_ids_answer_without_the_kernel_btf(monkeypatch):
    def no_parse():
        raise AssertionError("parsed the kernel BTF")
    monkeypatch.setattr(F, "_kernel_btf", no_parse)
    F.remember_btf_func_ids({"a": None, "b": 42})
    assert F._first_func(("a", "b", "c")) == ("b", 42)


def test_unknown_names_are_learned_from_one_parse(monkeypatch):
    fake = FakeBtf({"b": 42, "c": 9})
    parses = []
    monkeypatch.setattr(F, "_kernel_btf", lambda: parses.append(1) or fake)
    F.remember_btf_func_ids({"a": None})
    assert F._first_func(("a", "b", "c")) == ("b", 42)
    assert fake.asked == ["b"] and len(parses) == 1
    assert F.known_btf_func_ids() == {"a": None, "b": 42}
    assert F._first_func(("x", "c")) == ("c", 9) and len(parses) == 2
    assert F._first_func(("a", "x")) is None and len(parses) == 2      # both known absent now


def test_malformed_remembered_entries_are_ignored(monkeypatch):
    fake = FakeBtf({"b": 42})
    monkeypatch.setattr(F, "_kernel_btf", lambda: fake)
    F.remember_btf_func_ids({"b": "42", 3: 1, "c": -1, "d": True})
    assert F.known_btf_func_ids() == {}
    assert F._first_func(("b",)) == ("b", 42)
    F.remember_btf_func_ids({"b": 7})            # what was learned from the BTF stays
    assert F.known_btf_func_ids() == {"b": 42}
