"""`nft -j list chains` of a network namespace, run ahead in the background.

The tracer lists each traced namespace's nftables chains after it attached (its blind spots:
chains outside the netfilter bracket), ~3.5 ms of a start spent waiting for nft. The command
starts the listings of the namespaces it names first thing instead, while the other CPU is still idle
(the object's reader is forked a few ms later), and the tracer takes the output at the end. The
chains a start reports are those of its beginning either way: a chain added meanwhile is as
unseen as one added after `tracing`.

Nothing here reports errors: a listing that cannot be had (nft missing, spawn refused, non-zero
exit, no answer in time) gives None, and the tracer lists the chains itself, which says why.
"""
from __future__ import annotations

import os
import select
import time
from typing import TYPE_CHECKING, Optional

from netbee.loader.child_process import stop_child

if TYPE_CHECKING:
    from netbee.netns import Netns

# as long as the tracer's own listing may take
TIMEOUT = 10.0


def _find(program: str) -> Optional[str]:
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(d or ".", program)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None


class ChainListing:
    """A running `nft -j list chains` in one network namespace."""

    def __init__(self, pid: int, out_fd: int, inode: int) -> None:
        self.inode = inode     # the netns it lists
        self._pid = pid
        self._fd = out_fd

    @classmethod
    def start(cls, ns: Optional["Netns"] = None) -> Optional["ChainListing"]:
        """A listing of ns (None: the calling thread's netns), or None when nft cannot be
        started there."""
        nft = _find("nft")
        if nft is None:
            return None
        if ns is not None:
            from netbee import netns
            from netbee.loader.errors import NetBeeError

            try:
                # a spawned process starts in the namespace of the thread that spawned it
                with netns.entered(ns):
                    return cls.start()
            except (NetBeeError, OSError):
                return None
        try:
            inode = os.stat("/proc/thread-self/ns/net").st_ino
            r, w = os.pipe()
        except OSError:
            return None
        try:
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            try:
                # posix_spawn: no fork of this process's pages, and no subprocess import (~3 ms)
                pid = os.posix_spawn(nft, [nft, "-j", "list", "chains"], os.environ,
                                     file_actions=[(os.POSIX_SPAWN_DUP2, null, 0),
                                                   (os.POSIX_SPAWN_DUP2, w, 1),
                                                   (os.POSIX_SPAWN_DUP2, null, 2)])
            finally:
                os.close(null)
        except OSError:
            os.close(r)
            return None
        finally:
            os.close(w)
        return cls(pid, r, inode)

    def output(self, timeout: float = TIMEOUT) -> Optional[str]:
        """nft's JSON, once it has exited with status 0; None otherwise (then closed)."""
        if self._fd < 0:
            return None
        chunks = []
        deadline = time.monotonic() + timeout
        ok = False
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._fd], [], [], left)[0]:
                    break
                chunk = os.read(self._fd, 1 << 16)
                if not chunk:
                    ok = True
                    break
                chunks.append(chunk)
        except OSError:
            pass
        if not ok:
            self.close()
            return None
        os.close(self._fd)
        self._fd = -1
        pid, self._pid = self._pid, 0
        try:
            _pid, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return None   # reaped by a SIGCHLD handler of the caller's: status unknown
        if os.waitstatus_to_exitcode(status) != 0:
            return None
        try:
            return b"".join(chunks).decode()
        except UnicodeDecodeError:
            return None

    def close(self) -> None:
        """Stop and reap nft if it still runs (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._pid:
            pid, self._pid = self._pid, 0
            stop_child(pid)
