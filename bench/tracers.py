"""Start and stop the tracers under test as separate processes: netbee's command and bpftrace.

A tracer counts as ready when netbee prints its `netbee: tracing` line, or, for
either tool, when its first event line appears on stdout (startup.py sends a
steady trickle of packets so that an attached probe fires within a few ms).
"""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from typing import IO, List, Optional, Sequence

ROOT = pathlib.Path(__file__).resolve().parent.parent
BT_DIR = pathlib.Path(__file__).resolve().parent / "bpftrace"
TRACEFS = "/sys/kernel/tracing"


def netbee_argv(args: Sequence[str]) -> List[str]:
    return [sys.executable, "-m", "netbee"] + list(args)


INSTALL_DIR = pathlib.Path("/tmp/netbee-bench-install")
SYSTEM_PYTHON = "/usr/bin/python3"
_installed: set = set()


def installed_netbee_argv(args: Sequence[str], root: pathlib.Path = ROOT) -> List[str]:
    """netbee as a user's `pip install .` runs it: the system interpreter (Debian's python3), the
    packages in one directory with their bytecode compiled, a console script that imports
    netbee.cli. This checkout's development venv is not what users run: its editable install
    adds ~30 ms to every interpreter start (an import hook), and pyenv's site adds certifi's .pth.
    Built once per benchmark process from this checkout (or from the checkout `root`, for a
    comparison of two commits side by side)."""
    where = _install_dir(root)
    if root not in _installed:
        import shutil

        import construct
        import elftools
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True)
        shutil.copytree(root / "netbee", where / "netbee", symlinks=False,
                        ignore=shutil.ignore_patterns("__pycache__"))
        for mod in (construct, elftools):
            src = pathlib.Path(mod.__file__).parent
            shutil.copytree(src, where / src.name, ignore=shutil.ignore_patterns("__pycache__"))
        python = SYSTEM_PYTHON if os.path.exists(SYSTEM_PYTHON) else sys.executable
        (where / "netbee-console").write_text(
            f"#!{python}\nimport sys\nfrom netbee.cli import main\nsys.exit(main())\n")
        (where / "netbee-console").chmod(0o755)
        subprocess.run([python, "-m", "compileall", "-q", str(where)], check=True,
                       stdout=subprocess.DEVNULL)
        _installed.add(root)
    return [str(where / "netbee-console")] + list(args)


def _install_dir(root: pathlib.Path) -> pathlib.Path:
    if root == ROOT:
        return INSTALL_DIR
    import hashlib
    return INSTALL_DIR.with_name(INSTALL_DIR.name + "-" + hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12])


def installed_python_argv(args: Sequence[str]) -> List[str]:
    """The interpreter of installed_netbee_argv() with that installation's netbee importable."""
    installed_netbee_argv([])
    python = SYSTEM_PYTHON if os.path.exists(SYSTEM_PYTHON) else sys.executable
    return ["env", f"PYTHONPATH={INSTALL_DIR}", python] + list(args)


def bpftrace_argv(script: str) -> List[str]:
    # -B none: unbuffered output, so a pipe sees each event when it happens.
    return ["bpftrace", "-B", "none", str(BT_DIR / script)]


def ensure_tracefs() -> None:
    """bpftrace's tracepoint probes need tracefs; it is not mounted by default on this machine.

    Mounted if absent and left mounted (unmounting could pull it from under another user)."""
    if not os.path.exists(os.path.join(TRACEFS, "events")):
        subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], check=True)


class Tracer:
    """One tracer process with its output collected by background threads and timestamps taken."""

    def __init__(self, argv: Sequence[str], stdout_to_null: bool = False,
                 env: Optional[dict] = None) -> None:
        self.argv = list(argv)
        self.t_launch = time.monotonic()
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env or {})
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL if stdout_to_null else subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=full_env, cwd=str(ROOT))
        self.stderr_lines: List[str] = []
        self.stderr_times: List[float] = []
        self.stdout_lines = 0
        self.stdout_head: List[str] = []        # the first lines, for readiness markers
        self.stdout_head_times: List[float] = []
        self.t_tracing: Optional[float] = None      # `netbee: tracing` seen
        self.t_first_event: Optional[float] = None  # first stdout line seen
        self._ready = threading.Event()
        self._threads = [threading.Thread(target=self._read_err, args=(self.proc.stderr,), daemon=True)]
        if not stdout_to_null:
            self._threads.append(threading.Thread(target=self._read_out, args=(self.proc.stdout,), daemon=True))
        for t in self._threads:
            t.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_err(self, f: IO[bytes]) -> None:
        for raw in f:
            line = raw.decode(errors="replace").rstrip("\n")
            now = time.monotonic()
            if self.t_tracing is None and line.startswith("netbee: tracing"):
                self.t_tracing = now
            self.stderr_lines.append(line)
            self.stderr_times.append(now)
            self._ready.set()
        self._ready.set()

    def _read_out(self, f: IO[bytes]) -> None:
        # Big chunks and a C-level newline count: the reader must cost far less than the tracer.
        fd = f.fileno()
        head = b""
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            now = time.monotonic()
            if len(self.stdout_head) < 10:
                head += chunk[:4096]
                lines = head.split(b"\n")
                head = lines.pop()
                for line in lines[:10 - len(self.stdout_head)]:
                    self.stdout_head.append(line.decode(errors="replace"))
                    self.stdout_head_times.append(now)
            if self.t_first_event is None:
                self.t_first_event = now
            self.stdout_lines += chunk.count(b"\n")
            self._ready.set()
        self._ready.set()

    def _when(self, need: str) -> Optional[float]:
        if need == "tracing":
            return self.t_tracing
        if need == "event":
            return self.t_first_event
        if need.startswith("stderr:"):
            prefix = need[len("stderr:"):]
            for line, t in zip(list(self.stderr_lines), list(self.stderr_times)):
                if line.startswith(prefix):
                    return t
            return None
        if need.startswith("stdout:"):
            prefix = need[len("stdout:"):]
            for line, t in zip(list(self.stdout_head), list(self.stdout_head_times)):
                if line.startswith(prefix):
                    return t
            return None
        raise ValueError(f"unknown readiness {need!r}")

    def wait_ready(self, timeout: float = 20.0, need: str = "tracing") -> float:
        """Seconds from launch to readiness: need="tracing" (netbee's line), "event" (first stdout
        line), "stderr:PREFIX" or "stdout:PREFIX" (a line starting with PREFIX; stdout: first 10 lines)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            t = self._when(need)
            if t is not None:
                return t - self.t_launch
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv[:4]} exited with {self.proc.returncode}:\n"
                                   + "\n".join(self.stderr_lines[-15:]))
            self._ready.wait(0.005)
            self._ready.clear()
        self.kill()
        raise RuntimeError(f"{self.argv[:4]} not ready ({need}) within {timeout}s:\n"
                           + "\n".join(self.stderr_lines[-15:]))

    def interrupt(self, timeout: float = 20.0) -> float:
        """Ctrl-C (SIGINT); returns seconds until the process has exited."""
        t0 = self.t_sigint = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"{self.argv[:4]} did not exit within {timeout}s of SIGINT")
        dt = time.monotonic() - t0
        for t in self._threads:
            t.join(timeout=5)
        return dt

    def stderr_after_sigint(self, needle: str) -> Optional[float]:
        """Seconds from SIGINT to the first later stderr line containing needle (netbee's summary)."""
        t0 = getattr(self, "t_sigint", None)
        if t0 is None:
            return None
        for line, t in zip(self.stderr_lines, self.stderr_times):
            if t >= t0 and needle in line:
                return t - t0
        return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "Tracer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def peak_rss_kb(pid: int) -> int:
    """VmHWM (peak resident set) of a live process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")
