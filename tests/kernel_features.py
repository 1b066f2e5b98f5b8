"""Which kernel features this kernel really offers, for the requires_kernel marker.

Each check either finds the kernel interface or tries the operation itself: fentry in particular
cannot be judged from the version or the config (this CI host has CONFIG_FUNCTION_TRACER and still
refuses fentry with EPERM), so it is probed by loading and attaching a two-instruction program.
netbee.loader.features is asked first when it exists; the ctypes fallback keeps the harness usable
before the loader lands and never enters the netbee package.
"""
from __future__ import annotations

import ctypes
import os
import struct
from functools import lru_cache
from typing import Callable, Dict, Optional, Tuple

KPROBE_PMU = "/sys/bus/event_source/devices/kprobe"
TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
BTF_VMLINUX = "/sys/kernel/btf/vmlinux"
PROBE_FUNCS = ("ip_rcv", "netif_rx", "__netif_receive_skb")

_SYS_BPF = 321  # x86_64
_BPF_PROG_LOAD, _BPF_LINK_CREATE = 5, 28
_PROG_TYPE_KPROBE, _PROG_TYPE_TRACING = 2, 26
_TRACE_FENTRY, _TRACE_KPROBE_MULTI = 24, 42
_RET0 = struct.pack("<BBhi", 0xB7, 0, 0, 0) + struct.pack("<BBhi", 0x95, 0, 0, 0)


def tracefs_dir() -> Optional[str]:
    for d in TRACEFS_DIRS:
        if os.path.exists(os.path.join(d, "kprobe_events")) or os.path.exists(os.path.join(d, "events")):
            return d
    return None


def _check_kprobe() -> Tuple[bool, str]:
    if os.path.isdir(KPROBE_PMU):
        return True, "kprobe PMU present"
    d = tracefs_dir()
    if d and os.path.exists(os.path.join(d, "kprobe_events")):
        return True, f"{d}/kprobe_events present"
    return False, f"no {KPROBE_PMU} and no tracefs kprobe_events (CONFIG_KPROBES off?)"


def _check_tracefs_kprobe() -> Tuple[bool, str]:
    d = tracefs_dir()
    if not d:
        return False, "tracefs not mounted"
    path = os.path.join(d, "kprobe_events")
    if not os.path.exists(path):
        return False, f"{path} missing"
    if not os.access(path, os.W_OK):
        return False, f"{path} not writable"
    return True, f"{path} writable"


def _bpf(cmd: int, attr: bytes) -> Tuple[int, int]:
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(attr, 128)
    ret = libc.syscall(_SYS_BPF, cmd, buf, 128)
    return ret, ctypes.get_errno()


def _load(prog_type: int, attach_type: int, btf_id: int = 0) -> Tuple[int, int]:
    insns = ctypes.create_string_buffer(_RET0, len(_RET0))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = bytearray(128)
    struct.pack_into("<IIQQ", attr, 0, prog_type, 2, ctypes.addressof(insns), ctypes.addressof(lic))
    attr[48:48 + 8] = b"nb_probe"
    struct.pack_into("<I", attr, 68, attach_type)
    struct.pack_into("<I", attr, 108, btf_id)
    return _bpf(_BPF_PROG_LOAD, bytes(attr))


def btf_func_id(name: str, path: str = BTF_VMLINUX) -> int:
    """Type id of FUNC `name` in a raw BTF file (0 if absent); a minimal scan, enough for probing."""
    with open(path, "rb") as f:
        data = f.read()
    magic, _ver, _fl, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", data)
    if magic != 0xEB9F:
        return 0
    strings = data[hdr_len + str_off: hdr_len + str_off + str_len]
    want = strings.find(b"\0" + name.encode() + b"\0")
    if want < 0:
        return 0
    want += 1
    extra = {1: 4, 3: 12, 14: 4, 17: 4}
    per_member = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}
    pos, end, tid = hdr_len + type_off, hdr_len + type_off + type_len, 1
    while pos < end:
        name_off, info = struct.unpack_from("<II", data, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        if kind == 12 and name_off == want:
            return tid
        pos += 12 + extra.get(kind, 0) + per_member.get(kind, 0) * vlen
        tid += 1
    return 0


def _probe_fentry() -> Tuple[bool, str]:
    if not os.path.exists(BTF_VMLINUX):
        return False, "no kernel BTF"
    for func in PROBE_FUNCS:
        btf_id = btf_func_id(func)
        if btf_id:
            break
    else:
        return False, "no probe function in kernel BTF"
    fd, err = _load(_PROG_TYPE_TRACING, _TRACE_FENTRY, btf_id)
    if fd < 0:
        return False, f"fentry program load on {func} failed: {os.strerror(err)}"
    try:
        attr = struct.pack("<IIII", fd, 0, _TRACE_FENTRY, 0)
        link, err = _bpf(_BPF_LINK_CREATE, attr)
        if link < 0:
            return False, f"fentry attach to {func} failed: {os.strerror(err)}"
        os.close(link)
        return True, f"fentry on {func} loaded and attached"
    finally:
        os.close(fd)


def _probe_kprobe_multi() -> Tuple[bool, str]:
    fd, err = _load(_PROG_TYPE_KPROBE, _TRACE_KPROBE_MULTI)
    if fd < 0:
        return False, f"kprobe.multi program load failed: {os.strerror(err)}"
    try:
        for func in PROBE_FUNCS:
            sym = ctypes.create_string_buffer(func.encode())
            syms = (ctypes.c_void_p * 1)(ctypes.addressof(sym))
            attr = struct.pack("<IIIIIIQ", fd, 0, _TRACE_KPROBE_MULTI, 0, 0, 1, ctypes.addressof(syms))
            link, err = _bpf(_BPF_LINK_CREATE, attr)
            if link >= 0:
                os.close(link)
                return True, f"kprobe.multi link on {func} created"
        return False, f"kprobe.multi link failed: {os.strerror(err)}"
    finally:
        os.close(fd)


def _from_loader(feature: str) -> Optional[Tuple[bool, str]]:
    """netbee.loader.features.has(name) -> (available, detail), when the loader is importable."""
    try:
        from netbee.loader import features
    except ImportError:
        return None
    try:
        ok, why = features.has(feature)
    except KeyError:
        return None
    return bool(ok), f"netbee.loader.features: {why}"


CHECKS: Dict[str, Callable[[], Tuple[bool, str]]] = {
    "kprobe": _check_kprobe,
    "tracefs_kprobe": _check_tracefs_kprobe,
    "fentry": _probe_fentry,
    "kprobe_multi": _probe_kprobe_multi,
}


# What each Debian guest kernel must offer (measured, see /work/shared/notes/kernels.md): inside a
# guest a test needing one of these FAILS if the probe says no; a feature outside the set (kprobe.multi
# needs CONFIG_FPROBE, off in Debian 6.1) deselects the test on that kernel only.
GUEST_EXPECTED: Dict[str, Tuple[str, ...]] = {
    "6.1": ("kprobe", "tracefs_kprobe", "fentry"),
    "6.12": ("kprobe", "tracefs_kprobe", "fentry", "kprobe_multi"),
}


def guest_series(release: str) -> Optional[str]:
    for series in sorted(GUEST_EXPECTED, key=len, reverse=True):
        if release.startswith(series + ".") or release.startswith(series + "-"):
            return series
    return None


@lru_cache(maxsize=None)
def check(feature: str) -> Tuple[bool, str]:
    """(available, why) for one feature name of the requires_kernel marker."""
    if feature not in CHECKS:
        raise ValueError(f"unknown kernel feature {feature!r}; known: {sorted(CHECKS)}")
    if feature in ("fentry", "kprobe_multi"):
        answer = _from_loader(feature)
        if answer is not None:
            return answer
    return CHECKS[feature]()
