"""Read a running netbee's in-kernel counters (the per-CPU `counters` map) from outside the process.

The map is found through /proc/PID/fdinfo (`map_id:`), opened by id and read
with the syscall door of netbee.loader, so the flood benchmark can check the
command's own summary against what the kernel counted.
"""
from __future__ import annotations

import os
import sys
from typing import Dict, Optional

from netbee.loader import syscall as sc
from netbee.loader.maps import possible_cpus

MAP_GET_FD_BY_ID = 14   # not in netbee's Cmd table: netbee itself never opens maps by id
COUNTER_NAMES = ("seen", "filtered", "submitted", "lost")   # enum nb_counter order


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


def open_counters(pid: int) -> sc.Fd:
    """An fd of the process's counters map: it keeps the map readable after the process exits
    (its programs detached then, so the values are final)."""
    fd = _find_map(pid, "counters")
    if fd is None:
        raise RuntimeError(f"process {pid} holds no BPF map named 'counters'")
    return fd


def read(pid: int) -> Dict[str, int]:
    """seen, filtered, submitted, lost summed over CPUs, as the kernel holds them now."""
    with open_counters(pid) as fd:
        return read_fd(fd)


def read_fd(fd: sc.Fd) -> Dict[str, int]:
    """read() through an fd from open_counters()."""
    info = sc.obj_info(fd.fd, sc.MapInfo())
    stride = (info.value_size + 7) & ~7
    ncpu = possible_cpus()
    out = {}
    for i, name in enumerate(COUNTER_NAMES):
        key = sc.Buffer(i.to_bytes(4, sys.byteorder))
        val = sc.Buffer(stride * ncpu)
        sc.bpf(sc.Cmd.MAP_LOOKUP_ELEM, sc.MapElemAttr(map_fd=fd.fd, key=key.addr, value=val.addr),
               what="counters lookup")
        raw = val.raw
        out[name] = sum(int.from_bytes(raw[c * stride:c * stride + 8], sys.byteorder) for c in range(ncpu))
    return out
