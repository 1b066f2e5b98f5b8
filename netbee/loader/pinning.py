"""Pinning: loaded programs and maps kept as files in a bpf filesystem, and opened again.

A pinned object outlives the process that loaded it until its file is removed; the filesystem
lives in memory, so everything pinned goes at reboot. A set of objects is pinned into a temporary
directory that is then renamed into place, so a reader never sees half a set.
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, List, Optional, Tuple

from netbee.loader import syscall as sc
from netbee.loader.errors import NetBeeError, SyscallError
from netbee.loader.maps import Map
from netbee.loader.programs import Program

BPFFS_ROOT = "/sys/fs/bpf"
MOUNTINFO = "/proc/self/mountinfo"


def fs_type_at(path: str, mountinfo: Optional[str] = None) -> Optional[str]:
    """The filesystem type of the mount that holds path (the longest matching mount point)."""
    if mountinfo is None:
        with open(MOUNTINFO) as f:
            mountinfo = f.read()
    path = os.path.realpath(path)
    best, fstype = -1, None
    for line in mountinfo.splitlines():
        pre, sep, post = line.partition(" - ")
        fields = pre.split()
        if not sep or len(fields) < 5 or not post:
            continue
        # mount points escape spaces as \040
        point = fields[4].replace("\\040", " ")
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best:  # later mounts on the same point hide earlier ones
            best, fstype = len(point), post.split()[0]
    return fstype


def ensure_bpffs(root: str = BPFFS_ROOT) -> None:
    """Mount a bpf filesystem on root unless one is there (as bpftool does before pinning)."""
    if fs_type_at(root) == "bpf":
        return
    if not os.path.isdir(root):
        raise NetBeeError(f"{root} does not exist: no bpf filesystem to pin in")
    sc.mount("bpf", root, "bpf")


def pin_name(name: str) -> str:
    """A file name for an object: the bpf filesystem refuses names with a dot (.rodata, .bss)."""
    return name.replace(".", "_") or "_"


def pin_set(directory: str, programs: Dict[str, Program], maps: Dict[str, Map]) -> None:
    """Pin programs (prog_NAME) and maps (map_NAME) as one directory, replacing any old one."""
    parent, base = os.path.split(directory.rstrip("/"))
    tmp = os.path.join(parent, f"{base}_tmp{os.getpid()}")
    remove_set(tmp)
    os.makedirs(tmp)
    try:
        for name, prog in programs.items():
            sc.obj_pin(prog.fd, os.path.join(tmp, "prog_" + pin_name(name)))
        for name, m in maps.items():
            sc.obj_pin(m.fd, os.path.join(tmp, "map_" + pin_name(name)))
        remove_set(directory)
        os.rename(tmp, directory)
    except BaseException:
        remove_set(tmp)
        raise


class PinnedSet(sc.Closeable):
    """Programs and maps opened from a pinned directory; close() releases this process's fds
    (the pinned files keep the objects)."""

    close_on_gc = True

    def __init__(self) -> None:
        self.programs: Dict[str, Program] = {}
        self.maps: Dict[str, Map] = {}

    def close(self) -> None:
        for obj in list(self.programs.values()) + list(self.maps.values()):
            try:
                obj.close()
            except Exception:
                pass
        self.programs, self.maps = {}, {}


def open_set(directory: str, programs: Iterable[Tuple[str, str, str, int]],
             maps: Iterable[str]) -> PinnedSet:
    """Open what pin_set() pinned: programs as (name, kind, attach target, attach BTF id), maps by
    name. A missing file raises SyscallError (ENOENT)."""
    out = PinnedSet()
    try:
        for name, kind, target, btf_id in programs:
            fd = sc.obj_get(os.path.join(directory, "prog_" + pin_name(name)))
            out.programs[name] = Program.adopt(fd, name, kind, target, btf_id)
        for name in maps:
            fd = sc.obj_get(os.path.join(directory, "map_" + pin_name(name)))
            out.maps[name] = Map.adopt(fd, name)
    except BaseException:
        out.close()
        raise
    return out


def remove_set(directory: str) -> bool:
    """Unpin everything in directory and remove it; False if it was not there. Objects still open
    elsewhere (a running tracer's fds and links) live on until those are closed."""
    try:
        names: List[str] = os.listdir(directory)
    except FileNotFoundError:
        return False
    for name in names:
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(directory)
    except FileNotFoundError:
        pass
    return True


def is_missing(e: BaseException) -> bool:
    """A pinned file that is not there (another process removed the set, or a reboot)."""
    return isinstance(e, FileNotFoundError) or (isinstance(e, SyscallError) and e.errno == 2)
