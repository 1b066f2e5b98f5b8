"""The kernel's own accounting of BPF program run time (BPF_ENABLE_STATS), per program of one process.

A process's programs are found through /proc/PID/fdinfo: program fds and link
fds both carry a `prog_id:` line, so this works for netbee, bpftrace and the
floor alike without asking them anything.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Set

from netbee.loader import syscall
from netbee.loader.errors import SyscallError


@dataclass
class ProgStat:
    prog_id: int
    name: str
    run_time_ns: int
    run_cnt: int


def prog_ids_of(pid: int) -> Set[int]:
    ids: Set[int] = set()
    base = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(base):
        try:
            with open(os.path.join(base, fd)) as f:
                for line in f:
                    if line.startswith("prog_id:"):
                        ids.add(int(line.split()[1]))
        except OSError:
            continue  # fd closed meanwhile
    return ids


def snapshot(pid: int) -> Dict[int, ProgStat]:
    out: Dict[int, ProgStat] = {}
    for pid_ in sorted(prog_ids_of(pid)):
        try:
            fd = syscall.prog_fd_by_id(pid_)
        except SyscallError:
            continue  # unloaded meanwhile
        with fd:
            info = syscall.obj_info(fd.fd, syscall.ProgInfo())
        out[pid_] = ProgStat(pid_, info.name.decode(errors="replace"), info.run_time_ns, info.run_cnt)
    return out


def delta(before: Dict[int, ProgStat], after: Dict[int, ProgStat]) -> Dict[int, ProgStat]:
    """Per program: run time and run count accumulated between two snapshots."""
    out = {}
    for pid_, a in after.items():
        b = before.get(pid_)
        out[pid_] = ProgStat(pid_, a.name, a.run_time_ns - (b.run_time_ns if b else 0),
                             a.run_cnt - (b.run_cnt if b else 0))
    return out


class StatsOn:
    """Kernel run-time statistics on for the duration of a with block (the fd keeps them on)."""

    def __enter__(self) -> "StatsOn":
        self._fd = syscall.enable_stats()
        return self

    def __exit__(self, *exc: object) -> None:
        self._fd.close()
