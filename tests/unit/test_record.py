"""netbee.loader.record: the data classes of a start without @dataclass (whose import and
per-class code generation cost a cold start ~25 ms in each of its two processes)."""
from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from netbee.loader.record import FrozenRecord, Record

ROOT = Path(__file__).resolve().parents[2]


class Point(Record):
    __slots__ = ("x", "y")

    def __init__(self, x: int, y: int = 0) -> None:
        self.x, self.y = x, y


class Key(FrozenRecord):
    __slots__ = ("a", "b")

    def __init__(self, a: int, b: str) -> None:
        self.a, self.b = a, b


def test_equality_repr_fields_and_replace_as_a_dataclass_has_them():
    p = Point(1, 2)
    assert p == Point(1, 2) and p != Point(1, 3) and p != (1, 2)
    assert repr(p) == "Point(x=1, y=2)"
    assert p.fields() == {"x": 1, "y": 2}
    q = p.replace(y=5)
    assert q == Point(1, 5) and p == Point(1, 2)   # a copy
    with pytest.raises(TypeError, match="no field 'z'"):
        p.replace(z=1)
    with pytest.raises(AttributeError):
        p.z = 1   # fields only: __slots__
    with pytest.raises(TypeError):
        hash(p)   # mutable: unhashable, as a dataclass
    assert pickle.loads(pickle.dumps(p)) == p


def test_frozen_records_hash_by_their_fields():
    assert hash(Key(1, "x")) == hash(Key(1, "x"))
    assert {Key(1, "x"), Key(1, "x"), Key(2, "x")} == {Key(1, "x"), Key(2, "x")}
    assert pickle.loads(pickle.dumps(Key(3, "y"))) == Key(3, "y")


def test_a_start_imports_no_dataclasses():
    """Every module the command imports on its way to `tracing` (both processes' share)."""
    code = ("import sys\n"
            "import netbee.cli, netbee.filter, netbee.filter_codegen, netbee.output, netbee.tracer, "
            "netbee.hooks, netbee.netns\n"
            "import netbee.loader.btf, netbee.loader.elf, netbee.loader.core, netbee.loader.collection, "
            "netbee.loader.prepared, netbee.loader.features, netbee.loader.links, "
            "netbee.loader.background_parse, netbee.loader.kfunc, netbee.loader.inline\n"
            "from netbee.loader import deferred_imports\n"
            "print(deferred_imports.loaded('dataclasses'))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "a module on the start's path imports dataclasses again"
