"""Modules netbee does not use on its way to `tracing` (construct's and pyelftools' debuggers,
pprint's dataclasses) stay unloaded until first use, and each works in full when used."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = r"""
import sys
early = set(sys.modules)   # (a venv's site hooks may load ipaddress before anything)
import netbee.abi
from netbee.loader import deferred_imports
names = [n for n in deferred_imports.DEFERRED if n not in early]
print(len(names) >= 6, all(type(sys.modules[n]) is deferred_imports.LoadedOnUse for n in names))
import hashlib, pickle
import construct
print(hashlib.sha256(b"x").hexdigest()[:8], pickle.loads(pickle.dumps([1, 2])))
from pdb import Pdb
import inspect, traceback
print(Pdb.__name__, inspect.isfunction(print), traceback.format_exception_only(ValueError("v")))
from dataclasses import dataclass
@dataclass
class P:
    x: int
import ipaddress
print(P(3), ipaddress.ip_address("10.0.0.7").packed.hex(), sorted({type(sys.modules[n]).__name__ for n in names}))
print(construct.Struct("a" / construct.Int8un).compile().parse(b"\x07").a)
"""


def _printed(code: str) -> str:
    """What `python -c code` prints, in a fresh interpreter of this checkout."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_unused_imports_load_on_first_use():
    assert _printed(SCRIPT).splitlines() == ["True True", "2d711642 [1, 2]",
                                "Pdb False ['ValueError: v\\n']", "P(x=3) 0a000007 ['module']", "7"]


def test_an_imported_module_stays():
    code = ("import sys, inspect\n"
            "from netbee.loader import deferred_imports\n"
            "deferred_imports.defer()\n"
            "print(sys.modules['inspect'] is inspect, deferred_imports.loaded('inspect'), "
            "deferred_imports.loaded('pdb'))\n")
    assert _printed(code).split() == ["True", "True", "False"]


def test_the_object_reader_loads_none_of_them():
    """What the child of `netbee --no-cache` imports to read the object: pyelftools included."""
    code = ("import sys\n"
            "early = set(sys.modules)\n"
            "from netbee.loader import deferred_imports\n"
            "deferred_imports.defer()\n"
            "from netbee.loader.elf import UnlinkedObject\n"
            "from netbee.prebuilt import default_object_path\n"
            "UnlinkedObject.from_path(default_object_path())\n"
            "import elftools.elf.elffile\n"
            "print([n for n in deferred_imports.DEFERRED if deferred_imports.loaded(n) and n not in early])\n")
    assert _printed(code) == "[]"


def test_a_library_callers_object_reader_gets_them_too():
    """Tracer.start forks the object's reader without the command: the stand-ins are set before
    the fork, so the child's pyelftools import skips the same modules (pickle it uses itself)."""
    code = ("import sys\n"
            "early = set(sys.modules)\n"
            "from netbee.loader.background_parse import BackgroundParse\n"
            "from netbee.loader import deferred_imports\n"
            "from netbee.prebuilt import default_object_path\n"
            "p = BackgroundParse(default_object_path())\n"
            "p.close()\n"
            "print(p.forked, [n for n in deferred_imports.DEFERRED if n not in early and n != 'pickle'\n"
            "                 and type(sys.modules.get(n)) is not deferred_imports.LoadedOnUse])\n")
    assert _printed(code) == "True []"
