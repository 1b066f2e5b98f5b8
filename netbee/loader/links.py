"""Attach loaded programs: every way NetBee needs, each fallback a named method that can be forced.

attach(prog, ...) picks by prog.kind; each attach_* function takes `method` to force one path:
  tp_btf      "link" (BPF_LINK_CREATE, BPF_TRACE_RAW_TP) | "raw_tp_open" (RAW_TRACEPOINT_OPEN, name NULL)
  raw_tp      RAW_TRACEPOINT_OPEN by name
  tracepoint  perf_event_open(PERF_TYPE_TRACEPOINT) + "link" (BPF_LINK_CREATE perf_event) | "ioctl"
  kprobe      "pmu" (kprobe PMU) | "tracefs" (kprobe_events); then the perf attach ("link" | "ioctl")
  kprobe.multi  BPF_LINK_CREATE BPF_TRACE_KPROBE_MULTI by symbol names
  fentry/fexit  "link" (BPF_LINK_CREATE) | "raw_tp_open" (RAW_TRACEPOINT_OPEN, name NULL)
  netfilter   BPF_LINK_CREATE (pf, hooknum, priority) inside a chosen network namespace
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from typing import Any, Callable, Iterator, List, Optional, Sequence, Union

from netbee.loader import syscall as sc
from netbee.loader import tracefs
from netbee.loader.errors import AttachError, NotSupportedError, SyscallError
from netbee.loader.programs import AttachType

KPROBE_PMU = "/sys/bus/event_source/devices/kprobe"
NETNS_RUN_DIR = "/var/run/netns"
F_KPROBE_MULTI_RETURN = 1
ENOTSUPP = 524  # kernel-internal "not supported", leaks to user space from BPF
_FALLBACK_ERRNOS = (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP, errno.ENOSYS, errno.EPERM)


class Link(sc.Closeable):
    """An attachment; close() detaches (idempotent) and runs cleanups such as removing a
    tracefs kprobe event. `method` says which path was taken."""

    close_on_gc = True

    def __init__(self, kind: str, target: str, method: str, fds: Sequence[sc.Fd],
                 cleanups: Sequence[Callable[[], None]] = ()) -> None:
        self.kind = kind
        self.target = target
        self.method = method
        self._fds = list(fds)  # first = the one that holds the attachment
        self._cleanups = list(cleanups)

    @property
    def fd(self) -> int:
        return self._fds[0].fd

    @property
    def closed(self) -> bool:
        return all(f.closed for f in self._fds) and not self._cleanups

    def close(self) -> None:
        for f in self._fds:
            f.close()
        cleanups, self._cleanups = self._cleanups, []
        for fn in cleanups:
            fn()

    def info(self) -> sc.LinkInfo:
        return sc.obj_info(self.fd, sc.LinkInfo())

    def __repr__(self) -> str:
        return f"Link({self.kind} {self.target} via {self.method})"


def _link_create(prog: Any, attach_type: int, target_fd: int = 0, flags: int = 0,
                 what: str = "", fill: Optional[Callable[[sc.LinkCreateAttr], None]] = None) -> sc.Fd:
    attr = sc.LinkCreateAttr(prog_fd=prog.fd, target_fd=target_fd, attach_type=attach_type, flags=flags)
    if fill is not None:
        fill(attr)
    return sc.bpf_fd(sc.Cmd.LINK_CREATE, attr, what=what)


def _raw_tp_open(prog: Any, name: Optional[str], what: str) -> sc.Fd:
    buf = sc.cstring(name) if name is not None else None
    attr = sc.RawTracepointAttr(name=ctypes.addressof(buf) if buf is not None else 0, prog_fd=prog.fd)
    return sc.bpf_fd(sc.Cmd.RAW_TRACEPOINT_OPEN, attr, what=what)


def _auto(methods: Sequence[str], method: Optional[str], target: str,
          attempt: Callable[[str], Link]) -> Link:
    """Try methods in order (or only the forced one); fall back only on 'not supported' errors."""
    if method is not None:
        if method not in methods:
            raise ValueError(f"method {method!r} not one of {list(methods)}")
        return attempt(method)
    errors = []
    for m in methods:
        try:
            return attempt(m)
        except (SyscallError, NotSupportedError) as e:
            errors.append(f"{m}: {e}")
            if isinstance(e, SyscallError) and e.errno not in _FALLBACK_ERRNOS:
                break
    raise AttachError(target, "; ".join(errors))


# --- BTF-typed tracing -------------------------------------------------------------------------------
def attach_tp_btf(prog: Any, method: Optional[str] = None) -> Link:
    def attempt(m: str) -> Link:
        if m == "link":
            fd = _link_create(prog, AttachType.TRACE_RAW_TP, what=f"tp_btf/{prog.attach_target}")
        else:
            fd = _raw_tp_open(prog, None, f"tp_btf/{prog.attach_target}")
        return Link("tp_btf", prog.attach_target, m, [fd])
    return _auto(("link", "raw_tp_open"), method, f"tp_btf/{prog.attach_target}", attempt)


def attach_tracing(prog: Any, method: Optional[str] = None) -> Link:
    """fentry/fexit: the target was fixed at load time by attach_btf_id."""
    atype = AttachType.TRACE_FENTRY if prog.kind == "fentry" else AttachType.TRACE_FEXIT

    def attempt(m: str) -> Link:
        what = f"{prog.kind}/{prog.attach_target}"
        fd = _link_create(prog, atype, what=what) if m == "link" else _raw_tp_open(prog, None, what)
        return Link(prog.kind, prog.attach_target, m, [fd])
    return _auto(("link", "raw_tp_open"), method, f"{prog.kind}/{prog.attach_target}", attempt)


def attach_raw_tp(prog: Any, name: Optional[str] = None) -> Link:
    name = name or prog.attach_target
    try:
        fd = _raw_tp_open(prog, name, f"raw_tp/{name}")
    except SyscallError as e:
        if e.errno == errno.ENOENT:
            raise AttachError(f"raw_tp/{name}", f"no raw tracepoint named {name!r}") from None
        raise
    return Link("raw_tp", name, "raw_tp_open", [fd])


# --- perf events: tracepoints and kprobes -----------------------------------------------------------
def _attach_perf(prog: Any, pfd: sc.Fd, kind: str, target: str, method: Optional[str],
                 prefix: str, cleanups: Sequence[Callable[[], None]] = ()) -> Link:
    def attempt(m: str) -> Link:
        if m == "link":
            lfd = _link_create(prog, AttachType.PERF_EVENT, target_fd=pfd.fd, what=f"{kind} {target}")
            return Link(kind, target, f"{prefix}+link", [lfd, pfd], cleanups)
        sc.ioctl(pfd.fd, sc.PERF_EVENT_IOC_SET_BPF, prog.fd, what=f"PERF_EVENT_IOC_SET_BPF {target}")
        sc.ioctl(pfd.fd, sc.PERF_EVENT_IOC_ENABLE, 0, what=f"PERF_EVENT_IOC_ENABLE {target}")
        return Link(kind, target, f"{prefix}+ioctl", [pfd], cleanups)
    try:
        return _auto(("link", "ioctl"), method, f"{kind} {target}", attempt)
    except BaseException:
        pfd.close()
        for fn in cleanups:
            fn()
        raise


def attach_tracepoint(prog: Any, target: Optional[str] = None, method: Optional[str] = None) -> Link:
    """Classic tracepoint 'category/name' through perf_event_open."""
    target = target or prog.attach_target
    category, _, name = target.partition("/")
    tp_id = tracefs.tracepoint_id(category, name)
    pattr = sc.PerfEventAttr(type=sc.PERF_TYPE_TRACEPOINT, config=tp_id, sample_type=sc.PERF_SAMPLE_RAW,
                             sample_period=1, wakeup_events=1)
    pfd = sc.perf_event_open(pattr, what=f"tracepoint {target}")
    return _attach_perf(prog, pfd, "tracepoint", target, method, "perf")


def _read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read().strip())


def _pmu_retprobe_bit() -> int:
    with open(os.path.join(KPROBE_PMU, "format", "retprobe")) as f:
        spec = f.read().strip()  # "config:0"
    return int(spec.split(":")[1])


def _kprobe_pmu_fd(func: str, retprobe: bool, offset: int) -> sc.Fd:
    if not os.path.isdir(KPROBE_PMU):
        raise NotSupportedError("kprobe PMU", f"{KPROBE_PMU} missing")
    name = sc.cstring(func)
    pattr = sc.PerfEventAttr(type=_read_int(os.path.join(KPROBE_PMU, "type")),
                             config=(1 << _pmu_retprobe_bit()) if retprobe else 0,
                             config1=ctypes.addressof(name), config2=offset, sample_period=1,
                             wakeup_events=1)
    try:
        return sc.perf_event_open(pattr, what=f"kprobe PMU {func}")
    except SyscallError as e:
        if e.errno in (errno.ENOENT, errno.EINVAL, errno.EADDRNOTAVAIL):
            raise AttachError(func, f"no probeable kernel function {func!r} ({e})") from None
        raise


def _kprobe_tracefs_fd(func: str, retprobe: bool, offset: int) -> "tuple[sc.Fd, Callable[[], None]]":
    event = tracefs.add_kprobe(func, retprobe, offset)
    remove = lambda: tracefs.remove_kprobe(event)  # noqa: E731
    try:
        group, name = event.split("/")
        pattr = sc.PerfEventAttr(type=sc.PERF_TYPE_TRACEPOINT, config=tracefs.tracepoint_id(group, name),
                                 sample_type=sc.PERF_SAMPLE_RAW, sample_period=1, wakeup_events=1)
        return sc.perf_event_open(pattr, what=f"kprobe event {event}"), remove
    except BaseException:
        remove()
        raise


def attach_kprobe(prog: Any, func: Optional[str] = None, method: Optional[str] = None,
                  perf_method: Optional[str] = None, offset: int = 0) -> Link:
    """kprobe/kretprobe: the kprobe PMU, else a tracefs kprobe_events entry removed at close."""
    func = func or prog.attach_target
    retprobe = prog.kind == "kretprobe"

    def attempt(m: str) -> Link:
        if m == "pmu":
            return _attach_perf(prog, _kprobe_pmu_fd(func, retprobe, offset), prog.kind, func,
                                perf_method, "pmu")
        pfd, remove = _kprobe_tracefs_fd(func, retprobe, offset)
        return _attach_perf(prog, pfd, prog.kind, func, perf_method, "tracefs", [remove])
    return _auto(("pmu", "tracefs"), method, f"{prog.kind} {func}", attempt)


def attach_kprobe_multi(prog: Any, symbols: Union[str, Sequence[str], None] = None) -> Link:
    """kprobe.multi on exact names, or on a glob ("ip_*") resolved like libbpf does through
    available_filter_functions."""
    syms = symbols if symbols is not None else prog.attach_target
    names: List[str] = [syms] if isinstance(syms, str) else list(syms)
    if any(ch in n for n in names for ch in "*?["):
        expanded: List[str] = []
        for n in names:
            expanded += tracefs.match_functions(n) if any(ch in n for ch in "*?[") else [n]
        if not expanded:
            raise AttachError(f"{prog.kind} {','.join(names)}", "no attachable kernel function matches")
        names = sorted(set(expanded))
    bufs = [sc.cstring(s) for s in names]
    ptrs = (ctypes.c_uint64 * len(bufs))(*[ctypes.addressof(b) for b in bufs])

    def fill(attr: sc.LinkCreateAttr) -> None:
        km = attr.u.kprobe_multi
        km.flags = F_KPROBE_MULTI_RETURN if prog.kind == "kretprobe.multi" else 0
        km.cnt = len(names)
        km.syms = ctypes.addressof(ptrs)
    target = ",".join(names)
    try:
        fd = _link_create(prog, AttachType.TRACE_KPROBE_MULTI, fill=fill, what=f"{prog.kind} {target}")
    except SyscallError as e:
        if e.errno in (errno.ENOENT, errno.ESRCH, errno.EINVAL) and os.path.isdir(KPROBE_PMU):
            raise AttachError(f"{prog.kind} {target}", f"a symbol is missing or not probeable ({e})") from None
        if e.errno in (errno.EOPNOTSUPP, ENOTSUPP, errno.EINVAL):
            raise NotSupportedError("kprobe.multi", str(e)) from None
        raise
    return Link(prog.kind, target, "link", [fd])


# --- netfilter ---------------------------------------------------------------------------------------
def netns_path(netns: str) -> str:
    """A namespace given as NAME (ip netns) or as a path (/proc/PID/ns/net, a bind mount)."""
    return netns if "/" in netns else os.path.join(NETNS_RUN_DIR, netns)


@contextlib.contextmanager
def in_netns(netns: Optional[str]) -> Iterator[None]:
    """Run the body in another network namespace (this thread), always returning."""
    if netns is None:
        yield
        return
    path = netns_path(netns)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise AttachError(f"netns {netns}", f"cannot open {path}: {e.strerror}") from None
        try:
            sc.setns(target, sc.CLONE_NEWNET)
        finally:
            os.close(target)
        try:
            yield
        finally:
            sc.setns(home, sc.CLONE_NEWNET)
    finally:
        os.close(home)


def attach_netfilter(prog: Any, pf: int, hooknum: int, priority: int, *, netns: Optional[str] = None,
                     flags: int = 0) -> Link:
    """BPF netfilter link at (pf, hooknum, priority) in netns (None = the current one)."""
    def fill(attr: sc.LinkCreateAttr) -> None:
        nf = attr.u.netfilter
        nf.pf, nf.hooknum, nf.priority, nf.flags = pf, hooknum, priority, flags
    target = f"netfilter pf={pf} hook={hooknum} prio={priority}" + (f" netns={netns}" if netns else "")
    with in_netns(netns):
        try:
            fd = _link_create(prog, AttachType.NETFILTER, fill=fill, what=target)
        except SyscallError as e:
            if e.errno == errno.EBUSY:
                raise AttachError(target, "priority already taken at this hook (EBUSY)") from e
            if e.errno == errno.ERANGE:
                raise AttachError(target, "priority out of range (INT_MIN/INT_MAX are reserved)") from e
            raise
    return Link("netfilter", target, "link", [fd])


# --- dispatch ----------------------------------------------------------------------------------------
def attach(prog: Any, **kw: Any) -> Link:
    """Attach by prog.kind; keyword arguments go to the attach_* function of that kind."""
    kind = prog.kind
    if kind == "tp_btf":
        return attach_tp_btf(prog, **kw)
    if kind in ("fentry", "fexit"):
        return attach_tracing(prog, **kw)
    if kind == "raw_tp":
        return attach_raw_tp(prog, **kw)
    if kind == "tracepoint":
        return attach_tracepoint(prog, **kw)
    if kind in ("kprobe", "kretprobe"):
        return attach_kprobe(prog, **kw)
    if kind in ("kprobe.multi", "kretprobe.multi"):
        return attach_kprobe_multi(prog, **kw)
    if kind == "netfilter":
        return attach_netfilter(prog, **kw)
    raise ValueError(f"cannot attach program kind {kind!r}")
