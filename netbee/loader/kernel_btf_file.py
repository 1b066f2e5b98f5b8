"""Where a kernel publishes its BTF, and how to map it.

Linux 6.16 lets a process map /sys/kernel/btf/* read-only; read(), sysfs hands the 5.5 MB of
vmlinux out 4 KiB at a time (~4-5 ms where the mapping costs nothing and a checksum of all of it
1.3 ms). The kernel's pages do not count in the process's resident set. An ordinary file is
never mapped here: its pages would count, all at once (a vmlinux may be hundreds of MB).
"""
from __future__ import annotations

import mmap
import os
from typing import BinaryIO, Optional

KERNEL_BTF_DIR = "/sys/kernel/btf/"
KERNEL_BTF_PATH = KERNEL_BTF_DIR + "vmlinux"


def map_kernel_btf(f: BinaryIO, path: str) -> Optional[mmap.mmap]:
    """The kernel BTF file `f` (opened from `path`) mapped read-only, or None: not a kernel's
    own BTF, or a kernel before 6.16."""
    if not os.path.abspath(path).startswith(KERNEL_BTF_DIR):
        return None
    try:
        return mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
    except (OSError, ValueError):
        return None
