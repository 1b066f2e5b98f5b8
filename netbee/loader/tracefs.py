"""tracefs: find or mount it, tracepoint ids, and our kprobe_events entries (add, remove, sweep stale)."""
from __future__ import annotations

import errno
import fnmatch
import itertools
import os
import re
from typing import List, Optional

from netbee.loader import syscall as sc
from netbee.loader.errors import AttachError, NotSupportedError, SyscallError

CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
KPROBE_GROUP = "netbee"
# "p:group/event ...", "r:group/event ..." or "r<maxactive>:group/event ..."
_EVENT_RE = re.compile(r"^[pr]\d*:(?P<group>[^/\s]+)/(?P<event>\S+)")
_OUR_EVENT_RE = re.compile(r"^netbee_(?P<pid>\d+)_\d+$")
_counter = itertools.count()
_swept = False


def find(mount_if_missing: bool = True) -> str:
    """Directory of a mounted tracefs; mounts it on /sys/kernel/tracing when nothing is mounted."""
    for d in CANDIDATES:
        if os.path.isdir(os.path.join(d, "events")):
            return d
    if not mount_if_missing:
        raise NotSupportedError("tracefs", "not mounted")
    try:
        sc.mount("nodev", CANDIDATES[0], "tracefs")
    except SyscallError as e:
        raise NotSupportedError("tracefs", f"not mounted and mounting failed: {e}") from None
    return CANDIDATES[0]


def tracepoint_id(category: str, name: str, root: Optional[str] = None) -> int:
    path = os.path.join(root or find(), "events", category, name, "id")
    try:
        with open(path) as f:
            return int(f.read())
    except FileNotFoundError:
        raise AttachError(f"tracepoint {category}/{name}", f"no such tracepoint ({path} missing)") from None


def filter_functions(root: Optional[str] = None) -> List[str]:
    """Functions ftrace (so fprobe/kprobe.multi) can attach to, from available_filter_functions."""
    path = os.path.join(root or find(), "available_filter_functions")
    try:
        with open(path) as f:
            return [line.split()[0] for line in f if line.strip()]
    except OSError as e:
        raise NotSupportedError("ftrace function list", f"{path}: {e.strerror}") from None


def match_functions(pattern: str, root: Optional[str] = None) -> List[str]:
    """Attachable function names matching a shell glob (what libbpf does for kprobe.multi)."""
    return sorted(set(fnmatch.filter(filter_functions(root), pattern)))


def kprobe_events_path(root: Optional[str] = None) -> str:
    path = os.path.join(root or find(), "kprobe_events")
    if not os.path.exists(path):
        raise NotSupportedError("tracefs kprobe_events", f"{path} missing (CONFIG_KPROBE_EVENTS off?)")
    return path


def _write(path: str, line: str) -> None:
    # kprobe_events takes one command per write(2), appended (O_APPEND keeps other tools' probes)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_events(root: Optional[str] = None) -> List[str]:
    """'group/event' for every kprobe event defined."""
    with open(kprobe_events_path(root)) as f:
        return [m.group("group") + "/" + m.group("event") for m in map(_EVENT_RE.match, f) if m]


def sweep_stale(root: Optional[str] = None) -> List[str]:
    """Remove netbee_<pid>_<n> events whose pid no longer runs (left by a killed netbee)."""
    removed = []
    for ev in list_events(root):
        group, name = ev.split("/", 1)
        m = _OUR_EVENT_RE.match(name)
        if group == KPROBE_GROUP and m and not _pid_alive(int(m.group("pid"))):
            try:
                _write(kprobe_events_path(root), f"-:{ev}\n")
                removed.append(ev)
            except OSError:
                pass  # still in use by a live perf event of someone else; leave it
    return removed


def add_kprobe(func: str, retprobe: bool, offset: int = 0, root: Optional[str] = None) -> str:
    """Define a kprobe event for func; returns 'group/event'."""
    global _swept
    path = kprobe_events_path(root)
    if not _swept:
        _swept = True
        sweep_stale(root)
    name = f"netbee_{os.getpid()}_{next(_counter)}"
    target = func + (f"+{offset}" if offset else "")
    try:
        _write(path, f"{'r' if retprobe else 'p'}:{KPROBE_GROUP}/{name} {target}\n")
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.EINVAL):
            raise AttachError(func, f"no probeable kernel function {func!r} (kprobe_events: "
                                    f"{os.strerror(e.errno)})") from None
        raise AttachError(func, f"writing {path}: {e.strerror}") from None
    return f"{KPROBE_GROUP}/{name}"


def remove_kprobe(event: str, root: Optional[str] = None) -> None:
    try:
        _write(kprobe_events_path(root), f"-:{event}\n")
    except (OSError, NotSupportedError):
        pass  # already gone; nothing else we can do at exit
