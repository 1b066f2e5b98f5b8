"""netbee.cachefiles: what counts as a dead run's temporary file."""
from __future__ import annotations

import os
import subprocess
import sys

from netbee.cachefiles import dead_temporaries, remove_quietly


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", ""])
    p.wait()
    return p.pid   # reaped: no /proc entry (pid reuse within the test is not a concern)


def test_dead_temporaries_are_those_of_exited_processes(tmp_path):
    dead = _dead_pid()
    names = [f"a.json.tmp{dead}", f"b.json.tmp{os.getpid()}", "c.json", "d.json.tmpx", f"e_tmp{dead}"]
    for n in names:
        (tmp_path / n).write_text("")
    assert dead_temporaries(str(tmp_path), ".tmp") == [str(tmp_path / f"a.json.tmp{dead}")]
    assert dead_temporaries(str(tmp_path), "_tmp") == [str(tmp_path / f"e_tmp{dead}")]
    assert dead_temporaries(str(tmp_path / "missing"), ".tmp") == []


def test_remove_quietly(tmp_path):
    f = tmp_path / "x"
    f.write_text("")
    remove_quietly(str(f))
    remove_quietly(str(f))   # already gone: no error
    assert not f.exists()
