"""Read a running netbee's in-kernel event counters (maps `counters` and `scratch`) from outside the process.

The maps are found through /proc/PID/fdinfo (`map_id:`), opened by id and read
with the syscall door of netbee.loader, so the flood benchmark can check the
command's own summary against what the kernel counted.
"""
from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional

from netbee.abi import EVENT_COUNTERS, count_events
from netbee.loader import syscall as sc
from netbee.loader.maps import possible_cpus

MAP_GET_FD_BY_ID = 14   # not in netbee's Cmd table: netbee itself never opens maps by id


def _map_ids_of(pid: int) -> set:
    ids = set()
    base = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(base):
        try:
            with open(os.path.join(base, fd)) as f:
                for line in f:
                    if line.startswith("map_id:"):
                        ids.add(int(line.split()[1]))
        except OSError:
            continue
    return ids


def _find_map(pid: int, name: str) -> Optional[sc.Fd]:
    for map_id in sorted(_map_ids_of(pid)):
        fd = sc.bpf_fd(MAP_GET_FD_BY_ID, sc.GetIdAttr(start_id=map_id), what=f"map id {map_id}")
        info = sc.obj_info(fd.fd, sc.MapInfo())
        if info.name.decode(errors="replace") == name:
            return fd
        fd.close()
    return None


class KernelCounters:
    """Fds of a netbee process's `counters` and `scratch` maps (both hold part of each count, see
    netbee_abi.h): they keep the maps readable after the process exits (its programs detached
    then, so the values are final)."""

    def __init__(self, pid: int) -> None:
        self.fds = {}
        for name in ("counters", "scratch"):
            fd = _find_map(pid, name)
            if fd is None:
                self.close()
                raise RuntimeError(f"process {pid} holds no BPF map named {name!r}")
            self.fds[name] = fd

    def close(self) -> None:
        for fd in self.fds.values():
            fd.close()
        self.fds = {}

    def __enter__(self) -> "KernelCounters":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _lookup_percpu(self, name: str, key: int) -> List[bytes]:
        fd = self.fds[name]
        info = sc.obj_info(fd.fd, sc.MapInfo())
        stride = (info.value_size + 7) & ~7
        k = sc.Buffer(key.to_bytes(4, sys.byteorder))
        val = sc.Buffer(stride * possible_cpus())
        sc.bpf(sc.Cmd.MAP_LOOKUP_ELEM, sc.MapElemAttr(map_fd=fd.fd, key=k.addr, value=val.addr),
               what=f"{name} lookup")
        raw = val.raw
        return [raw[c * stride:c * stride + info.value_size] for c in range(possible_cpus())]

    def read(self) -> Dict[str, int]:
        """filtered, submitted, lost summed over CPUs and nesting levels, as the kernel holds them now."""
        shared = {c: self._lookup_percpu("counters", int(c)) for c in EVENT_COUNTERS}
        got = count_events(shared, self._lookup_percpu("scratch", 0))
        return {c.name.lower(): n for c, n in got.items()}


def read(pid: int) -> Dict[str, int]:
    """KernelCounters.read() of a running process."""
    with KernelCounters(pid) as kc:
        return kc.read()
