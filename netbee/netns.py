"""Network namespaces: resolve --netns NAME|PATH|all, enter one with setns, watch for new and removed ones.

Netfilter hooks and BPF netfilter links are per network namespace, so the tracer needs to know which
namespaces to watch, to enter each one while it creates links there, and to learn when one goes away:
a link holds a reference on its namespace and would keep a deleted namespace (and its veths) alive.
"""
from __future__ import annotations

import contextlib
import os
import stat
import time
from typing import Iterable, Iterator

from netbee.loader.errors import NetBeeError, UsageError
from netbee.loader.record import FrozenRecord

NETNS_RUN_DIR = "/var/run/netns"
CLONE_NEWNET = 0x40000000
ALL = "all"


class Netns(FrozenRecord):
    """One network namespace: a display name, a file that refers to it, and its nsfs inode."""
    __slots__ = ("name", "path", "inode")

    def __init__(self, name: str, path: str, inode: int) -> None:
        self.name = name
        self.path = path
        self.inode = inode

    def __str__(self) -> str:
        return f"{self.name} (net:[{self.inode}])"


def _nsfs_dev() -> int:
    # Every namespace file lives on the one nsfs device; a bind-mount target that is not (yet)
    # mounted has some other device and must not be taken for a namespace.
    return os.stat("/proc/self/ns/net").st_dev


def _stat_ns(path: str, nsfs_dev: int) -> int | None:
    """The namespace inode behind path, or None when path is not (or no longer) a netns file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st.st_dev != nsfs_dev or stat.S_ISDIR(st.st_mode):
        return None
    return st.st_ino


def current() -> Netns:
    """The namespace this process runs in."""
    ino = os.stat("/proc/self/ns/net").st_ino
    # A stable path: /proc/self follows whichever thread opens it, but its ns/net is per process.
    return Netns("current", f"/proc/{os.getpid()}/ns/net", ino)


def named(run_dir: str = NETNS_RUN_DIR, nsfs_dev: int | None = None) -> list[Netns]:
    """Namespaces named by `ip netns add` (bind mounts under /var/run/netns)."""
    dev = _nsfs_dev() if nsfs_dev is None else nsfs_dev
    try:
        names = sorted(os.listdir(run_dir))
    except OSError:
        return []
    out = []
    for name in names:
        path = os.path.join(run_dir, name)
        ino = _stat_ns(path, dev)
        if ino is not None:
            out.append(Netns(name, path, ino))
    return out


def of_processes(proc: str = "/proc", nsfs_dev: int | None = None) -> list[Netns]:
    """One entry per distinct network namespace that a running process is in (lowest pid wins)."""
    dev = _nsfs_dev() if nsfs_dev is None else nsfs_dev
    seen: dict[int, Netns] = {}
    try:
        pids = sorted(int(p) for p in os.listdir(proc) if p.isdigit())
    except OSError:
        return []
    for pid in pids:
        path = f"{proc}/{pid}/ns/net"
        ino = _stat_ns(path, dev)
        if ino is not None and ino not in seen:
            seen[ino] = Netns(f"pid:{pid}", path, ino)
    return list(seen.values())


def resolve_one(spec: str, run_dir: str = NETNS_RUN_DIR) -> Netns:
    """NAME (from /var/run/netns) or PATH (any nsfs file, e.g. /proc/PID/ns/net)."""
    dev = _nsfs_dev()
    if "/" in spec:
        path = spec
    else:
        if spec in ("", ".", ".."):
            raise UsageError(f"bad network namespace name {spec!r}")
        path = os.path.join(run_dir, spec)
    ino = _stat_ns(path, dev)
    if ino is None:
        if not os.path.exists(path):
            raise UsageError(f"no network namespace {spec!r} ({path} does not exist)")
        raise UsageError(f"{spec!r}: {path} is not a network namespace file")
    return Netns(spec, path, ino)


def resolve_all(run_dir: str = NETNS_RUN_DIR, proc: str = "/proc") -> list[Netns]:
    """The current namespace, the named ones and those of running processes, deduplicated by inode."""
    dev = _nsfs_dev()
    out: dict[int, Netns] = {}
    cur = current()
    out[cur.inode] = cur
    for ns in named(run_dir, dev) + of_processes(proc, dev):
        out.setdefault(ns.inode, ns)
    return list(out.values())


def resolve(specs: Iterable[str] | None, run_dir: str = NETNS_RUN_DIR, proc: str = "/proc") -> list[Netns]:
    """--netns values -> namespaces, deduplicated by inode; None or empty means the current one."""
    specs = list(specs or [])
    if not specs:
        return [current()]
    out: dict[int, Netns] = {}
    for spec in specs:
        found = resolve_all(run_dir, proc) if spec == ALL else [resolve_one(spec, run_dir)]
        for ns in found:
            out.setdefault(ns.inode, ns)
    return list(out.values())


@contextlib.contextmanager
def entered(ns: Netns) -> Iterator[None]:
    """Run the body inside ns (this thread only), then always return to the namespace we came from."""
    from netbee.loader import syscall

    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise NetBeeError(f"cannot open network namespace {ns.name} ({ns.path}): {e.strerror}") from e
        try:
            if os.fstat(target).st_ino != ns.inode:
                # The name now refers to another namespace: entering it would attach to the wrong one.
                raise NetBeeError(f"network namespace {ns.name} was replaced (inode changed)")
            syscall.setns(target, CLONE_NEWNET)
        finally:
            os.close(target)
        try:
            yield
        finally:
            syscall.setns(home, CLONE_NEWNET)
    finally:
        os.close(home)


class NetnsWatcher:
    """Re-resolves the --netns specs on poll() (at most every `interval` s) and reports changes.

    Only stats files: cheap enough to run from the event loop. A namespace counts as removed when
    nothing we can see refers to it any more (its name is gone, its processes exited); links we hold
    would keep it alive in the kernel, which is exactly why the tracer must then close them.
    """

    def __init__(self, specs: Iterable[str] | None, interval: float = 0.5,
                 run_dir: str = NETNS_RUN_DIR, proc: str = "/proc") -> None:
        self.specs = list(specs or [])
        self.interval = interval
        self.run_dir = run_dir
        self.proc = proc
        self._last_poll = 0.0
        self.current: dict[int, Netns] = {ns.inode: ns for ns in resolve(self.specs, run_dir, proc)}

    def _scan(self) -> dict[int, Netns]:
        # Every spec can disappear; only `all` can also grow.
        dev = _nsfs_dev()
        found: dict[int, Netns] = {}
        for spec in self.specs:
            if spec == ALL:
                for ns in resolve_all(self.run_dir, self.proc):
                    found.setdefault(ns.inode, ns)
                continue
            path = spec if "/" in spec else os.path.join(self.run_dir, spec)
            ino = _stat_ns(path, dev)
            if ino is not None:
                found.setdefault(ino, Netns(spec, path, ino))
        return found

    def poll(self, now: float | None = None) -> tuple[list[Netns], list[Netns]]:
        """(added, removed) since the last poll; ([], []) when called again within `interval`."""
        t = time.monotonic() if now is None else now
        if not self.specs or t - self._last_poll < self.interval:
            return [], []
        self._last_poll = t
        found = self._scan()
        added = [ns for ino, ns in found.items() if ino not in self.current]
        removed = [ns for ino, ns in self.current.items() if ino not in found]
        for ns in removed:
            del self.current[ns.inode]
        for ns in added:
            self.current[ns.inode] = ns
        return added, removed
