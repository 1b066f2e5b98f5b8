"""The requires_kernel marker: deselected on a host lacking the feature, a failure in a guest that
should have it. Runs an inner pytest session with the project's conftest hooks."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

from tests import kernel_features

ROOT = Path(__file__).resolve().parents[2]
INNER_TEST = '''
import pytest

@pytest.mark.requires_kernel("kprobe")
def test_needs_kprobe():
    pass

def test_plain():
    pass
'''


def _inner(tmp_path: Path, env: Dict[str, str]) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text("from tests.conftest import *  # noqa: F401,F403\n")
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    full = {k: v for k, v in os.environ.items() if not k.startswith("NETBEE_")}
    full.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
                           "-c", os.devnull, "--rootdir", str(tmp_path), str(tmp_path)],
                          capture_output=True, text=True, env=full, cwd=tmp_path, timeout=120)


def test_host_deselects_what_the_kernel_lacks(tmp_path: Path) -> None:
    res = _inner(tmp_path, {})
    if kernel_features.check("kprobe")[0]:
        assert "2 passed" in res.stdout, res.stdout
    else:
        assert "1 passed, 1 deselected" in res.stdout, res.stdout
        assert "run in QEMU guests" in res.stdout
        assert "test_needs_kprobe  (lacks kprobe)" in res.stdout
    assert res.returncode == 0


def test_guest_fails_when_an_expected_feature_is_missing(tmp_path: Path) -> None:
    res = _inner(tmp_path, {"NETBEE_IN_VM": "1", "NETBEE_VM_SERIES": "6.1"})
    if kernel_features.check("kprobe")[0]:
        assert res.returncode == 0, res.stdout
    else:
        assert res.returncode == 1
        assert "1 passed, 1 error" in res.stdout and "kernel lacks kprobe" in res.stdout, res.stdout


def test_guest_deselects_a_feature_its_kernel_does_not_offer(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    res = _inner(tmp_path / "x", {"NETBEE_IN_VM": "1", "NETBEE_VM_SERIES": "6.99"})
    assert "1 passed, 1 deselected" in res.stdout, res.stdout
    assert "not offered by this guest kernel" in res.stdout


def test_guest_series_from_release() -> None:
    assert kernel_features.guest_series("6.1.0-56-amd64") == "6.1"
    assert kernel_features.guest_series("6.12.117+deb12-amd64") == "6.12"
    assert kernel_features.guest_series("6.18.44-fc-v657") is None
