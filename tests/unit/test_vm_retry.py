"""tests/vm/run.boot: which guest failures earn one more boot (vng's own failure) and which do not
(a timeout, the guest's own verdict); no guest is booted here."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import pytest

from tests.vm import run


def _run(tmp_path: Path, status: Optional[int], vng: int, log: str = "tests/kernel/x.py ") -> run.GuestRun:
    d = tmp_path / f"r{len(list(tmp_path.iterdir()))}"
    d.mkdir()
    return run.GuestRun("6.12", "6.12.0", status, 1.0, d, f"console vng={vng}", log, vng_status=vng)


@pytest.fixture
def boots(monkeypatch, tmp_path):
    queue: List[run.GuestRun] = []
    calls: List[str] = []

    def fake_boot_once(series, root, pytest_args, timeout):
        calls.append(series)
        return queue.pop(0)

    monkeypatch.setattr(run.kernels, "kernel_dir", lambda series: tmp_path)
    monkeypatch.setattr(run, "_boot_once", fake_boot_once)
    monkeypatch.setattr(run, "_save_btf", lambda root, results: None)
    return queue, calls


def test_vng_failing_under_a_running_guest_boots_once_more(boots, tmp_path):
    queue, calls = boots
    queue += [_run(tmp_path, None, run.VNG_FAILED), _run(tmp_path, 0, 0)]
    got = run.boot("6.12")
    assert len(calls) == 2 and got.exitstatus == 0
    assert got.console.startswith("[first boot failed after 1s: console vng=255]")


def test_a_second_failure_is_returned(boots, tmp_path):
    queue, calls = boots
    queue += [_run(tmp_path, None, run.VNG_FAILED), _run(tmp_path, None, run.VNG_FAILED)]
    got = run.boot("6.12")
    assert len(calls) == 2 and got.exitstatus is None


@pytest.mark.parametrize("status,vng", [(None, 124), (1, 0), (0, 0)])
def test_timeouts_and_the_guests_own_verdicts_are_final(boots, tmp_path, status, vng):
    queue, calls = boots
    queue += [_run(tmp_path, status, vng)]
    got = run.boot("6.12")
    assert len(calls) == 1 and got.exitstatus == status
