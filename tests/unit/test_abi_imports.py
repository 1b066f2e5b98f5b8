"""netbee.abi leaves construct's unused imports (pdb, hashlib, pickle) unloaded until first use,
and each works in full when used."""
from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import sys
import netbee.abi
from netbee.abi import _LoadedOnUse
names = ("pdb", "hashlib", "pickle")
print([type(sys.modules[n]) is _LoadedOnUse for n in names])
import hashlib, pickle
import construct
print(hashlib.sha256(b"x").hexdigest()[:8], pickle.loads(pickle.dumps([1, 2])))
from pdb import Pdb
print(Pdb.__name__, [type(sys.modules[n]).__name__ for n in names])
print(construct.Struct("a" / construct.Int8un).compile().parse(b"\x07").a)
"""


def test_construct_imports_load_on_first_use():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["[True, True, True]", "2d711642 [1, 2]", "Pdb ['module', 'module', 'module']", "7"]
