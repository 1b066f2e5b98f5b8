"""File chores shared by the two caches (progcache, prepcache): quiet removal, and the temporary
names a run writes before renaming into place, left behind when that run died."""
from __future__ import annotations

import os
from typing import List


def remove_quietly(path: str) -> None:
    """unlink, where already gone is as good as removed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def dead_temporaries(directory: str, marker: str) -> List[str]:
    """Paths in directory named NAME + marker + PID whose process no longer exists (PID alive: a
    run still writing it)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        _base, sep, pid = name.rpartition(marker)
        if sep and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            out.append(os.path.join(directory, name))
    return out
