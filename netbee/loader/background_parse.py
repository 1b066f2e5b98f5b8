"""Read the BPF object in a forked child while this process probes the kernel and reads its BTF.

A start without cached programs spends ~30 ms of pure Python on the ELF object and ~60-80 ms
on the kernel's BTF, the feature probes and the hook plan. Only the last step of the object's
parse, linking the planned programs, needs the plan; Python runs one thing at a time. So a
child forked early (while the process is small: few pages to copy on write) reads the object
on the other CPU and waits for the list of programs; it links them when told and sends the
ObjectSpec back pickled (~0.33 MB without the .BTF.ext the linked programs no longer need, ~1 ms
to read and unpickle). Before it waits it also searches the kernel BTF's string table for the
names the object's CO-RE relocations will look up (Btf.search_kernel_strings) and sends those
positions at once, in a first message: the parent, for the same unchanged file, finds the types
named there in the same pass over the kernel's types as its plan's names when they came in
time (kernel_strings_now()), else when it takes the object.

While it waits for that list it also makes the object's BTF what this kernel accepts
(btf.sanitize after the BTF feature probes, ~3 ms the parent would spend right after taking the
object): linking does not change the BTF.

The answer pipe carries two frames, each an 8-byte length and a pickle: ("strings", positions
or None), then ("spec", ObjectSpec, sanitized BTF bytes or None) or ("error", NetBeeError, None).

Nothing here is needed for correctness: when the child cannot be forked, dies, hangs or sends
something unreadable, the object is parsed here, in this process, and a malformed object fails
the same way as without the child (its error is sent back as raised).
"""
from __future__ import annotations

import fcntl
import gc
import os
import pickle
import select
import signal
import threading
import time
from typing import TYPE_CHECKING, Dict, Iterable, List, Mapping, Optional, Set, Tuple

from netbee.loader.child_process import stop_child
from netbee.loader.errors import NetBeeError

if TYPE_CHECKING:
    from netbee.loader.elf import ObjectSpec

# (netbee.loader.elf is imported where used: the child imports it, and pyelftools, while the
# parent does its own first steps)

# Room for the whole answer in the pipe (Linux >= 2.6.35): the child writes it at once and
# exits, the parent reads it in one go instead of 64 KiB at a time.
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_BYTES = 1 << 20   # the default /proc/sys/fs/pipe-max-size

# What the child may take, once told what to link, before the parent gives up on it and parses
# the object itself: far more than a parse takes (~30 ms), little enough that a wedged child
# never stalls a start for long.
CHILD_TIMEOUT = 5.0
# Seconds a child may live at all (SIGALRM): ~1000x a parse here, ~60x one in a QEMU guest.
CHILD_LIFETIME = 120


class BackgroundParse:
    """ObjectSpec.from_path(path, programs, replace), read ahead in a forked child; the programs
    and replacements are given later, to request()."""

    def __init__(self, path: str, kernel_btf: Optional[str] = None) -> None:
        """kernel_btf: the BTF file the caller will relocate against (None: the running
        kernel's); the child searches its strings for the object's look-ups meanwhile."""
        self.path = path
        self.kernel_btf = kernel_btf
        # (load_kernel's file key, {pattern: offsets}) from the child, for Btf.use_known_positions
        self.kernel_strings: Optional[Tuple[tuple, Dict[bytes, List[int]]]] = None
        self._pid = 0
        self._request_fd = self._answer_fd = -1
        self._strings_read = False   # the child's first frame taken
        # the object's BTF as sanitize() makes it for this kernel, from the child (result())
        self.object_btf: Optional[bytes] = None
        self._wanted: Optional[Set[str]] = None
        self._replace: dict = {}
        self.forked = False   # whether a child took the work: for tests and timings
        if threading.current_thread() is not threading.main_thread():
            # The main thread may hold a lock the child would need and never get: an import's
            # (a child of the tracer's background load, forked while the main thread imported
            # the event decoder after `tracing`, hung in pyelftools' import of dataclasses; seen
            # in the QEMU guests). Only the main thread forks, before any other thread runs.
            return
        others = _other_cpus()
        if not others:
            return   # one CPU: a child would only take turns with this process
        # the modules pyelftools imports for its debugging aids are not loaded by the child
        # either (a command has done this already; a library caller maybe not)
        from netbee.loader import deferred_imports
        deferred_imports.defer()
        try:
            req_r, req_w = os.pipe()
        except OSError:
            return
        try:
            ans_r, ans_w = os.pipe()
        except OSError:
            os.close(req_r)
            os.close(req_w)
            return
        try:
            fcntl.fcntl(ans_w, _F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass   # a smaller pipe only means more, smaller reads
        try:
            pid = os.fork()
        except OSError:
            for fd in (req_r, req_w, ans_r, ans_w):
                os.close(fd)
            return
        if pid == 0:   # the child: never returns
            os.close(req_w)
            os.close(ans_r)
            self._child(req_r, ans_w, others)
        os.close(req_r)
        os.close(ans_w)
        self._pid, self._request_fd, self._answer_fd, self.forked = pid, req_w, ans_r, True

    def reads(self, path: str, kernel_btf: Optional[str]) -> bool:
        """Whether this reads the object at `path` for relocation against `kernel_btf`."""
        def same(a: Optional[str], b: Optional[str]) -> bool:
            return a == b if a is None or b is None else os.path.abspath(a) == os.path.abspath(b)

        return same(path, self.path) and same(kernel_btf, self.kernel_btf)

    # -- the child ------------------------------------------------------------------------------
    def _child(self, request_fd: int, answer_fd: int, cpus: Set[int]) -> None:
        status = 1
        try:
            # The child writes only to its answer pipe: it lets go of the parent's standard
            # streams, so that a reader of the command's output sees their end when the command
            # ends, whatever the child is doing then.
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.close(null)
            # And a child wedged anyway (by a lock another thread of the parent held at the
            # fork) is ended by the kernel, not left behind: the parent stops waiting after
            # CHILD_TIMEOUT, the alarm's default action kills.
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(CHILD_LIFETIME)
            # A short life ended by os._exit: its garbage goes with it, no cycle collection
            # (the parse makes enough objects to run it dozens of times)
            gc.disable()
            # Off the parent's CPU: a forked child starts on its parent's, and the scheduler may
            # leave it there for tens of ms (measured: the parent's start then took longer than
            # without the child whenever another task kept the other CPU busy now and then).
            try:
                os.sched_setaffinity(0, cpus)
            except OSError:
                pass
            from netbee.loader.btf import KERNEL_BTF_PATH, Btf
            from netbee.loader.elf import UnlinkedObject
            found = None
            try:
                obj: object = UnlinkedObject.from_path(self.path)
                # The string searches the parent's CO-RE would make, while it is busy with the
                # kernel's types
                found = Btf.search_kernel_strings(self.kernel_btf or KERNEL_BTF_PATH,
                                                  Btf.lookup_patterns(*obj.kernel_lookups()))
            except NetBeeError as e:
                obj = e
            _write_frame(answer_fd, ("strings", found))
            btf_raw = None
            if not isinstance(obj, NetBeeError):
                try:
                    btf_raw = _sanitized_btf(obj)
                except NetBeeError:
                    pass   # the parent's collection does it, and reports what fails
            request = _read_all(request_fd)
            if request:   # nothing: the parent no longer wants it
                programs, replace = pickle.loads(request)
                try:
                    if isinstance(obj, NetBeeError):
                        raise obj
                    spec = obj.link(programs, replace)
                    # Each linked program carries its own func/line info and CO-RE records; the
                    # object's whole .BTF.ext (~570 of the answer's ~840 KB: every program's line
                    # info) is read by nothing after linking. Not sent: 2 ms less to pickle here,
                    # 1 ms less to unpickle there.
                    spec.btf_ext = None
                    answer: object = ("spec", spec, btf_raw)
                except NetBeeError as e:
                    answer = ("error", e, None)
                _write_frame(answer_fd, answer)
            status = 0
        finally:
            # No atexit handlers, no flushing of buffers inherited from the parent, no unwinding
            # into the caller's code (a Ctrl-C in the child included): only this exit.
            os._exit(status)

    # -- the parent -----------------------------------------------------------------------------
    def request(self, programs: Optional[Iterable[str]] = None,
                replace: Optional[Mapping[str, bytes]] = None) -> None:
        """Which programs to link, and which function bodies to replace (ObjectSpec.from_bytes)."""
        self._wanted = None if programs is None else set(programs)
        self._replace = dict(replace or {})
        if self._request_fd < 0:
            return
        data = memoryview(pickle.dumps((self._wanted, self._replace), protocol=pickle.HIGHEST_PROTOCOL))
        try:
            while data:
                data = data[os.write(self._request_fd, data):]
        except OSError:
            self.close()   # the child is gone: result() parses here
            return
        os.close(self._request_fd)
        self._request_fd = -1

    def kernel_strings_now(self) -> Optional[Tuple[tuple, Dict[bytes, List[int]]]]:
        """The child's kernel string positions if they have come (without waiting for them),
        for a caller that can use them early; None otherwise. result() takes them anyway."""
        if not self._strings_read and self._answer_fd >= 0:
            try:
                ready = select.select([self._answer_fd], [], [], 0)[0]
            except OSError:
                ready = []
            if ready:
                self._read_strings(time.monotonic() + CHILD_TIMEOUT)
        return self.kernel_strings

    def _read_strings(self, deadline: float) -> bool:
        """Take the first frame; False if the child failed to send it (then let go of)."""
        self._strings_read = True
        got = _read_frame(self._answer_fd, deadline)
        if not (isinstance(got, tuple) and len(got) == 2 and got[0] == "strings"
                and (got[1] is None or _is_kernel_strings(got[1]))):
            self.close()
            return False
        self.kernel_strings = got[1]
        return True

    def result(self) -> ObjectSpec:
        """The parsed object: the child's, or parsed here if the child failed to deliver it."""
        from netbee.loader.elf import ObjectSpec

        got = self._collect() if self._answer_fd >= 0 and self._request_fd < 0 else None
        self.close()
        if got is None:
            self.kernel_strings = None   # searched here, as without the child
            return ObjectSpec.from_path(self.path, programs=self._wanted, replace=self._replace)
        kind, value, self.object_btf = got
        if kind == "error":
            raise value
        return value

    def _collect(self):
        from netbee.loader.elf import ObjectSpec

        deadline = time.monotonic() + CHILD_TIMEOUT
        if not self._strings_read and not self._read_strings(deadline):
            return None
        got = _read_frame(self._answer_fd, deadline)
        if (isinstance(got, tuple) and len(got) == 3
                and (got[0] == "spec" and isinstance(got[1], ObjectSpec)
                     or got[0] == "error" and isinstance(got[1], NetBeeError))
                and (got[2] is None or isinstance(got[2], bytes))):
            return got
        return None

    def close(self) -> None:
        """Let the child go (idempotent): it exits at once if it was not told what to link."""
        for attr in ("_request_fd", "_answer_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                os.close(fd)
                setattr(self, attr, -1)
        if self._pid:
            pid, self._pid = self._pid, 0
            stop_child(pid)


def _sanitized_btf(obj) -> Optional[bytes]:
    """What Collection loads for the object's BTF on this kernel (its _load_btf)."""
    btf = obj.btf
    if btf is None:
        return None
    from netbee.loader.btf import sanitize
    from netbee.loader.features import btf_features

    return sanitize(btf, btf_features()).to_bytes()


def _is_kernel_strings(found: object) -> bool:
    return (isinstance(found, tuple) and len(found) == 2 and isinstance(found[0], tuple)
            and isinstance(found[1], dict)
            and all(isinstance(k, bytes) and isinstance(v, list) and all(isinstance(o, int) for o in v)
                    for k, v in found[1].items()))


def _other_cpus() -> Set[int]:
    """The CPUs this process may use, except the one it runs on now (empty with only one)."""
    try:
        allowed = os.sched_getaffinity(0)
        with open("/proc/self/stat", "rb") as f:
            here = int(f.read().rsplit(b")", 1)[1].split()[36])   # field 39: the last CPU run on
    except (OSError, ValueError, IndexError):
        return set()
    return allowed - {here} if len(allowed) > 1 else set()


def _write_frame(fd: int, message: object) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    data = memoryview(len(payload).to_bytes(8, "little") + payload)
    while data:
        data = data[os.write(fd, data):]


def _read_frame(fd: int, deadline: float) -> object:
    """One frame's message; None if the child did not send a whole readable one in time."""
    head = _read_exact(fd, 8, deadline)
    if head is None:
        return None
    payload = _read_exact(fd, int.from_bytes(head, "little"), deadline)
    if payload is None:
        return None
    try:
        return pickle.loads(payload)
    except Exception:   # a child that died mid-write: parse here instead
        return None


def _read_exact(fd: int, n: int, deadline: float) -> Optional[bytes]:
    chunks = []
    while n > 0:
        left = deadline - time.monotonic()
        try:
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, min(n, PIPE_BYTES))
        except OSError:
            return None
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
