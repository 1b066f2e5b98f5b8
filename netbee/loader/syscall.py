"""The only door to the kernel: bpf(2), perf_event_open(2), ioctl(2), setns(2) through libc's syscall().

Every raw call goes through the module-level function `door`, so a test can replace it with a fake.
Attribute layouts are the uapi structs of <linux/bpf.h> and <linux/perf_event.h>, one ctypes
Structure per command; the kernel zero-extends a shorter attr, so each command passes only its piece.
"""
from __future__ import annotations

import ctypes
import errno as _errno
import os
from typing import Callable, Optional

from netbee.loader.errors import SyscallError

# The interpreter's own symbols include libc's: no library search (ctypes.util.find_library runs
# ldconfig in a subprocess, ~10 ms of every start).
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

_NR = {
    "x86_64": {"bpf": 321, "perf_event_open": 298, "ioctl": 16, "setns": 308, "mount": 165},
    "aarch64": {"bpf": 280, "perf_event_open": 241, "ioctl": 29, "setns": 268, "mount": 40},
}
_MACHINE = os.uname().machine
if _MACHINE not in _NR:  # pragma: no cover - we only ship for these two
    raise ImportError(f"netbee: unsupported architecture {_MACHINE}")
NR_BPF = _NR[_MACHINE]["bpf"]
NR_PERF_EVENT_OPEN = _NR[_MACHINE]["perf_event_open"]
NR_IOCTL = _NR[_MACHINE]["ioctl"]
NR_SETNS = _NR[_MACHINE]["setns"]
NR_MOUNT = _NR[_MACHINE]["mount"]

u32 = ctypes.c_uint32
s32 = ctypes.c_int32
u64 = ctypes.c_uint64


# --- bpf commands --------------------------------------------------------------------------------
class Cmd:
    MAP_CREATE = 0
    MAP_LOOKUP_ELEM = 1
    MAP_UPDATE_ELEM = 2
    MAP_DELETE_ELEM = 3
    MAP_GET_NEXT_KEY = 4
    PROG_LOAD = 5
    OBJ_PIN = 6
    OBJ_GET = 7
    PROG_TEST_RUN = 10
    PROG_GET_NEXT_ID = 11
    PROG_GET_FD_BY_ID = 13
    OBJ_GET_INFO_BY_FD = 15
    RAW_TRACEPOINT_OPEN = 17
    BTF_LOAD = 18
    MAP_FREEZE = 22
    LINK_CREATE = 28
    ENABLE_STATS = 32


CMD_NAMES = {v: "BPF_" + k for k, v in vars(Cmd).items() if not k.startswith("_")}


class MapCreateAttr(ctypes.Structure):
    _fields_ = [("map_type", u32), ("key_size", u32), ("value_size", u32), ("max_entries", u32),
                ("map_flags", u32), ("inner_map_fd", u32), ("numa_node", u32),
                ("map_name", ctypes.c_char * 16), ("map_ifindex", u32), ("btf_fd", u32),
                ("btf_key_type_id", u32), ("btf_value_type_id", u32),
                ("btf_vmlinux_value_type_id", u32), ("map_extra", u64)]


class MapElemAttr(ctypes.Structure):
    """MAP_LOOKUP/UPDATE/DELETE_ELEM and MAP_GET_NEXT_KEY (value doubles as next_key)."""
    _fields_ = [("map_fd", u32), ("key", u64), ("value", u64), ("flags", u64)]


class MapFreezeAttr(ctypes.Structure):
    _fields_ = [("map_fd", u32)]


class ProgLoadAttr(ctypes.Structure):
    _fields_ = [("prog_type", u32), ("insn_cnt", u32), ("insns", u64), ("license", u64),
                ("log_level", u32), ("log_size", u32), ("log_buf", u64), ("kern_version", u32),
                ("prog_flags", u32), ("prog_name", ctypes.c_char * 16), ("prog_ifindex", u32),
                ("expected_attach_type", u32), ("prog_btf_fd", u32), ("func_info_rec_size", u32),
                ("func_info", u64), ("func_info_cnt", u32), ("line_info_rec_size", u32),
                ("line_info", u64), ("line_info_cnt", u32), ("attach_btf_id", u32),
                ("attach_btf_obj_fd", u32), ("core_relo_cnt", u32), ("fd_array", u64),
                ("core_relos", u64), ("core_relo_rec_size", u32), ("log_true_size", u32)]


class BtfLoadAttr(ctypes.Structure):
    _fields_ = [("btf", u64), ("btf_log_buf", u64), ("btf_size", u32), ("btf_log_size", u32),
                ("btf_log_level", u32), ("btf_log_true_size", u32)]


class _LinkKprobeMulti(ctypes.Structure):
    _fields_ = [("flags", u32), ("cnt", u32), ("syms", u64), ("addrs", u64), ("cookies", u64)]


class _LinkTracing(ctypes.Structure):
    _fields_ = [("target_btf_id", u32), ("cookie", u64)]


class _LinkPerfEvent(ctypes.Structure):
    _fields_ = [("bpf_cookie", u64)]


class _LinkNetfilter(ctypes.Structure):
    _fields_ = [("pf", u32), ("hooknum", u32), ("priority", s32), ("flags", u32)]


class _LinkUnion(ctypes.Union):
    _fields_ = [("target_btf_id", u32), ("perf_event", _LinkPerfEvent),
                ("kprobe_multi", _LinkKprobeMulti), ("tracing", _LinkTracing),
                ("netfilter", _LinkNetfilter)]


class LinkCreateAttr(ctypes.Structure):
    _fields_ = [("prog_fd", u32), ("target_fd", u32), ("attach_type", u32), ("flags", u32),
                ("u", _LinkUnion)]


class RawTracepointAttr(ctypes.Structure):
    _fields_ = [("name", u64), ("prog_fd", u32), ("cookie", u64)]


class ObjAttr(ctypes.Structure):
    """OBJ_PIN / OBJ_GET: a path in a bpf filesystem and the object's fd (PIN)."""
    _fields_ = [("pathname", u64), ("bpf_fd", u32), ("file_flags", u32)]


class InfoByFdAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", u32), ("info_len", u32), ("info", u64)]


class GetIdAttr(ctypes.Structure):
    """PROG_GET_NEXT_ID (start_id, next_id) and PROG_GET_FD_BY_ID (prog_id in start_id)."""
    _fields_ = [("start_id", u32), ("next_id", u32), ("open_flags", u32)]


class EnableStatsAttr(ctypes.Structure):
    _fields_ = [("type", u32)]


class TestRunAttr(ctypes.Structure):
    _fields_ = [("prog_fd", u32), ("retval", u32), ("data_size_in", u32), ("data_size_out", u32),
                ("data_in", u64), ("data_out", u64), ("repeat", u32), ("duration", u32),
                ("ctx_size_in", u32), ("ctx_size_out", u32), ("ctx_in", u64), ("ctx_out", u64),
                ("flags", u32), ("cpu", u32), ("batch_size", u32)]


class ProgInfo(ctypes.Structure):
    """struct bpf_prog_info up to verified_insns (the kernel fills what it has: 0 before 5.16)."""
    _fields_ = [("type", u32), ("id", u32), ("tag", ctypes.c_uint8 * 8), ("jited_prog_len", u32),
                ("xlated_prog_len", u32), ("jited_prog_insns", u64), ("xlated_prog_insns", u64),
                ("load_time", u64), ("created_by_uid", u32), ("nr_map_ids", u32), ("map_ids", u64),
                ("name", ctypes.c_char * 16), ("ifindex", u32), ("gpl_compatible", u32),
                ("netns_dev", u64), ("netns_ino", u64), ("nr_jited_ksyms", u32),
                ("nr_jited_func_lens", u32), ("jited_ksyms", u64), ("jited_func_lens", u64),
                ("btf_id", u32), ("func_info_rec_size", u32), ("func_info", u64),
                ("nr_func_info", u32), ("nr_line_info", u32), ("line_info", u64),
                ("jited_line_info", u64), ("nr_jited_line_info", u32), ("line_info_rec_size", u32),
                ("jited_line_info_rec_size", u32), ("nr_prog_tags", u32), ("prog_tags", u64),
                ("run_time_ns", u64), ("run_cnt", u64), ("recursion_misses", u64), ("verified_insns", u32)]


class MapInfo(ctypes.Structure):
    _fields_ = [("type", u32), ("id", u32), ("key_size", u32), ("value_size", u32),
                ("max_entries", u32), ("map_flags", u32), ("name", ctypes.c_char * 16)]


class LinkInfo(ctypes.Structure):
    """struct bpf_link_info header (type, id, prog_id); the per-type union is left as raw bytes."""
    _fields_ = [("type", u32), ("id", u32), ("prog_id", u32), ("_pad", u32), ("raw", ctypes.c_uint8 * 64)]


# --- perf_event_open -----------------------------------------------------------------------------
PERF_TYPE_TRACEPOINT = 2
PERF_SAMPLE_RAW = 1 << 10
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_DISABLE = 0x2401
PERF_EVENT_IOC_SET_BPF = 0x40042408


class PerfEventAttr(ctypes.Structure):
    """struct perf_event_attr (PERF_ATTR_SIZE_VER5 = 112 bytes); config1/config2 carry the kprobe
    function name pointer and offset for the kprobe PMU."""
    _fields_ = [("type", u32), ("size", u32), ("config", u64), ("sample_period", u64),
                ("sample_type", u64), ("read_format", u64), ("flags", u64), ("wakeup_events", u32),
                ("bp_type", u32), ("config1", u64), ("config2", u64), ("branch_sample_type", u64),
                ("sample_regs_user", u64), ("sample_stack_user", u32), ("clockid", s32),
                ("sample_regs_intr", u64), ("aux_watermark", u32), ("sample_max_stack", ctypes.c_uint16),
                ("_reserved2", ctypes.c_uint16)]


CLONE_NEWNET = 0x40000000


# --- the door ------------------------------------------------------------------------------------
def _libc_syscall(nr: int, *args: int) -> int:
    """Raw syscall; returns the result or raises OSError with the errno."""
    ret = _libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


door: Callable[..., int] = _libc_syscall
"""Replaceable by tests: door(nr, *args) -> int, raising OSError(errno) on failure."""


def bpf(cmd: int, attr: ctypes.Structure, *, what: str = "") -> int:
    """Run bpf(cmd, &attr, sizeof attr); errno becomes SyscallError naming the command."""
    try:
        return door(NR_BPF, cmd, ctypes.addressof(attr), ctypes.sizeof(attr))
    except OSError as e:
        if e.errno == _errno.EPERM and not has_bpf_capability():
            what = (what + ": " if what else "") + ("this process has neither CAP_BPF nor CAP_SYS_ADMIN "
                                                    "(run netbee as root)")
        raise SyscallError(CMD_NAMES.get(cmd, f"bpf cmd {cmd}"), e.errno or 0, what) from None


CAP_SYS_ADMIN = 21
CAP_BPF = 39


def has_bpf_capability(status_path: str = "/proc/self/status") -> bool:
    """CAP_BPF or CAP_SYS_ADMIN in the effective set (explains an EPERM; never used to refuse)."""
    try:
        with open(status_path) as f:
            for line in f:
                if line.startswith("CapEff:"):
                    eff = int(line.split()[1], 16)
                    return bool(eff & ((1 << CAP_BPF) | (1 << CAP_SYS_ADMIN)))
    except (OSError, ValueError, IndexError):
        pass
    return True


def bpf_fd(cmd: int, attr: ctypes.Structure, *, what: str = "") -> "Fd":
    """bpf() for commands that return a new file descriptor."""
    return Fd(bpf(cmd, attr, what=what), CMD_NAMES.get(cmd, str(cmd)) + (f" {what}" if what else ""))


def perf_event_open(attr: PerfEventAttr, pid: int = -1, cpu: int = 0, group_fd: int = -1,
                    flags: int = PERF_FLAG_FD_CLOEXEC, *, what: str = "") -> "Fd":
    attr.size = ctypes.sizeof(PerfEventAttr)
    try:
        fd = door(NR_PERF_EVENT_OPEN, ctypes.addressof(attr), pid, cpu, group_fd, flags)
    except OSError as e:
        raise SyscallError("perf_event_open", e.errno or 0, what) from None
    return Fd(fd, f"perf_event {what}")


def ioctl(fd: int, request: int, arg: int = 0, *, what: str = "") -> int:
    try:
        return door(NR_IOCTL, fd, request, arg)
    except OSError as e:
        raise SyscallError("ioctl", e.errno or 0, what or hex(request)) from None


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    try:
        door(NR_SETNS, fd, nstype)
    except OSError as e:
        raise SyscallError("setns", e.errno or 0) from None


def mount(source: str, target: str, fstype: str, flags: int = 0) -> None:
    """mount(2) without data (used to mount tracefs when nobody has)."""
    bufs = [ctypes.create_string_buffer(x.encode()) for x in (source, target, fstype)]
    try:
        door(NR_MOUNT, *[ctypes.addressof(b) for b in bufs], flags, 0)
    except OSError as e:
        raise SyscallError("mount", e.errno or 0, f"{fstype} on {target}") from None


def setrlimit_memlock(limit: int) -> None:
    """setrlimit(RLIMIT_MEMLOCK) with the `resource` module's errors turned into SyscallError."""
    import resource
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (limit, limit))
    except (ValueError, OSError) as e:
        raise SyscallError("setrlimit(RLIMIT_MEMLOCK)", getattr(e, "errno", None) or _errno.EPERM) from None


def release_free_heap() -> bool:
    """Give the C heap's free pages back to the kernel (glibc malloc_trim(0)); False where libc
    has no malloc_trim (musl). Freed Python objects and arrays often sit in the heap rather than
    in their own mappings (glibc raises its mmap threshold after big frees), so the resident set
    stays high until trimmed: the tracer calls this once the start-up data is gone, before it
    maps the ring buffer, which lowers the command's peak RSS by several MB."""
    trim = getattr(_libc, "malloc_trim", None)
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True


# --- buffers -------------------------------------------------------------------------------------
class Buffer:
    """Bytes pinned in a ctypes buffer, so the kernel can read (or write) them by address."""

    def __init__(self, data: "bytes | bytearray | int") -> None:
        if isinstance(data, int):
            self._buf = ctypes.create_string_buffer(data)
        else:
            self._buf = ctypes.create_string_buffer(bytes(data), len(data))

    @property
    def addr(self) -> int:
        return ctypes.addressof(self._buf)

    def __len__(self) -> int:
        return ctypes.sizeof(self._buf)

    @property
    def raw(self) -> bytes:
        return self._buf.raw


def cstring(s: str) -> ctypes.Array:
    return ctypes.create_string_buffer(s.encode())


# --- file descriptors ----------------------------------------------------------------------------
class Closeable:
    """Context-manager protocol for everything that owns kernel objects: `with x:` closes it.

    Subclasses define close(), idempotent. Those that also set `close_on_gc` close from __del__,
    so a forgotten object still releases its fd; errors there are swallowed because the
    interpreter may be shutting down.
    """

    close_on_gc = False

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if self.close_on_gc:
            try:
                self.close()
            except Exception:
                pass


class KernelObject(Closeable):
    """A named kernel object (map, program) owning one Fd in `_fd`, None until created."""

    name: str
    _fd: "Optional[Fd]"

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise ValueError(f"{self.name}: not loaded")
        return self._fd.fd

    def fileno(self) -> int:
        return self.fd

    @property
    def closed(self) -> bool:
        return self._fd is None or self._fd.closed

    def close(self) -> None:
        if self._fd is not None:
            self._fd.close()


class Fd(Closeable):
    """An owned file descriptor: close() is idempotent and also runs from __del__."""

    close_on_gc = True

    def __init__(self, fd: int, what: str = "") -> None:
        self._fd: Optional[int] = fd
        self.what = what

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise ValueError(f"use of closed fd ({self.what})")
        return self._fd

    def fileno(self) -> int:
        return self.fd

    @property
    def closed(self) -> bool:
        return self._fd is None

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def __int__(self) -> int:
        return self.fd

    def __repr__(self) -> str:
        return f"Fd({self._fd}, {self.what!r})"


# --- small helpers used by maps/programs/tests -----------------------------------------------------
def obj_info(fd: int, info: ctypes.Structure) -> ctypes.Structure:
    attr = InfoByFdAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    bpf(Cmd.OBJ_GET_INFO_BY_FD, attr)
    return info


def obj_pin(fd: int, path: str) -> None:
    """Make a map or program outlive this process as a file in a bpf filesystem."""
    name = cstring(path)
    bpf(Cmd.OBJ_PIN, ObjAttr(pathname=ctypes.addressof(name), bpf_fd=fd), what=path)


def obj_get(path: str) -> "Fd":
    """A new fd for the map or program pinned at path."""
    name = cstring(path)
    return bpf_fd(Cmd.OBJ_GET, ObjAttr(pathname=ctypes.addressof(name)), what=path)


def prog_ids() -> "list[int]":
    """Ids of every loaded program (BPF_PROG_GET_NEXT_ID walk)."""
    ids = []
    start = 0
    while True:
        attr = GetIdAttr(start_id=start)
        try:
            bpf(Cmd.PROG_GET_NEXT_ID, attr)
        except SyscallError as e:
            if e.errno == _errno.ENOENT:
                return ids
            raise
        ids.append(attr.next_id)
        start = attr.next_id


def prog_fd_by_id(prog_id: int) -> Fd:
    return bpf_fd(Cmd.PROG_GET_FD_BY_ID, GetIdAttr(start_id=prog_id), what=f"id {prog_id}")


def enable_stats(stats_type: int = 0) -> Fd:
    """BPF_ENABLE_STATS (type 0 = BPF_STATS_RUN_TIME); stats stay on while the fd is open."""
    return bpf_fd(Cmd.ENABLE_STATS, EnableStatsAttr(type=stats_type))
