"""Run the netbee command as a black box: start it, wait for its readiness line, stop it, parse JSON.

The CLI prints "netbee: tracing with the <backend> backend; ..." on stderr once every program is
attached; traffic generated after that line is guaranteed to be seen, so no sleeps are needed.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
READY_MARK = "netbee: tracing with"


def module_argv(python: str = sys.executable) -> List[str]:
    return [python, "-m", "netbee"]


def pyz_argv(pyz: Path, python: str = sys.executable) -> List[str]:
    # -I -S: no site-packages, no user site, no PYTHON* variables: the zipapp must carry everything.
    return [python, "-I", "-S", str(pyz)]


@dataclass
class NetbeeRun:
    argv: List[str]
    returncode: Optional[int] = None
    stdout: str = ""
    stderr: str = ""
    ready_line: str = ""
    events: List[Dict[str, Any]] = field(default_factory=list)


class Netbee:
    """`with Netbee(argv_prefix, args) as nb:` starts netbee and returns once it is tracing."""

    def __init__(self, prefix: Sequence[str], args: Sequence[str], ready_timeout: float = 60.0,
                 cwd: Optional[Path] = None, env: Optional[Dict[str, str]] = None) -> None:
        self.run = NetbeeRun(list(prefix) + list(args))
        self.ready_timeout = ready_timeout
        self.cwd = cwd
        self.extra_env = env or {}
        self.proc: Optional[subprocess.Popen] = None
        self._err_lines: List[str] = []
        self._out_lines: List[str] = []

    def __enter__(self) -> "Netbee":
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.extra_env)
        if self.cwd is None:
            env["PYTHONPATH"] = str(ROOT)
        self.proc = subprocess.Popen(self.run.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env, cwd=self.cwd or ROOT)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stderr, selectors.EVENT_READ)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if not sel.select(max(0.0, deadline - time.monotonic())):
                break
            line = self.proc.stderr.readline()
            if not line:
                break
            self._err_lines.append(line)
            if line.startswith(READY_MARK):
                self.run.ready_line = line.strip()
                return
        self.stop()
        raise AssertionError(f"netbee never became ready: {' '.join(self.run.argv)}\n"
                             f"exit {self.run.returncode}\nstderr:\n{self.run.stderr}")

    def wait_for(self, done: Callable[[List[Dict[str, Any]]], bool], timeout: float = 30.0) -> bool:
        """Read JSON events as they arrive until done(events) holds (True) or timeout (False).
        Stopping only then avoids losing events still on their way when the traffic ends."""
        assert self.proc is not None and self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while not done(self.run.events):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                return False
            line = self.proc.stdout.readline()
            if not line:
                return done(self.run.events)
            self._out_lines.append(line)
            if line.lstrip().startswith("{"):
                self.run.events.append(json.loads(line))
        return True

    def stop(self, timeout: float = 30.0) -> NetbeeRun:
        """SIGINT (like Ctrl-C) unless it already exited; collect output and JSON events."""
        proc = self.proc
        if proc is None:
            return self.run
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        self.run.returncode = proc.returncode
        self.run.stdout = "".join(self._out_lines) + out
        self.run.stderr = "".join(self._err_lines) + err
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("{"):
                self.run.events.append(json.loads(line))
        self.proc = None
        return self.run

    def wait(self, timeout: float = 30.0) -> NetbeeRun:
        """For runs bounded by -c N: wait for netbee to exit by itself, then collect."""
        assert self.proc is not None
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        return self.stop()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.stop()
