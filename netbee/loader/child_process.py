"""Ending a child process of ours that may still run (the object's reader, an nft listing)."""
from __future__ import annotations

import os
import signal


def stop_child(pid: int) -> None:
    """Kill the child `pid` if it has not exited, and reap it either way. Nothing to do if it
    was reaped already (a SIGCHLD handler of the caller's) or is gone."""
    try:
        if os.waitpid(pid, os.WNOHANG) == (0, 0):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    except (ChildProcessError, ProcessLookupError):
        pass
