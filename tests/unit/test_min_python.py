"""The declared minimum Python (setup.cfg python_requires) is what the code really needs (vermin)."""
from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _declared_minimum() -> str:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    m = re.fullmatch(r">=\s*(3\.\d+)", cfg["options"]["python_requires"].strip())
    assert m, cfg["options"]["python_requires"]
    return m.group(1)


def _vermin(target: str, path: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("vermin")
    if exe is None:
        pytest.fail("vermin is not installed (pip install vermin; .ci/run does)")
    return subprocess.run([exe, f"-t={target}-", "--no-tips", "--violations", "--no-parse-comments",
                           str(path)], capture_output=True, text=True, timeout=300)


def test_netbee_needs_nothing_newer_than_declared() -> None:
    minimum = _declared_minimum()
    assert minimum == "3.9"
    res = _vermin(minimum, ROOT / "netbee")
    assert res.returncode == 0, res.stdout + res.stderr


def test_vermin_catches_a_newer_construct(tmp_path: Path) -> None:
    # Proves the check above can fail: a match statement needs 3.10.
    (tmp_path / "new.py").write_text("def f(x):\n    match x:\n        case 1:\n            return 2\n")
    res = _vermin("3.9", tmp_path)
    assert res.returncode != 0 and "3.10" in res.stdout
