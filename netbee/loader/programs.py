"""Program load (with a verifier log on rejection) and object BTF load."""
from __future__ import annotations

import errno
import os
import struct
from enum import IntEnum
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

from netbee.loader import syscall as sc
from netbee.loader.errors import AttachError, BTFError, SyscallError, VerifierError
from netbee.loader.maps import kernel_name
from netbee.loader.prepared import FUNC_INFO_SIZE, LINE_INFO_SIZE, func_info_records


class ProgType(IntEnum):
    SOCKET_FILTER = 1
    KPROBE = 2
    TRACEPOINT = 5
    RAW_TRACEPOINT = 17
    TRACING = 26
    NETFILTER = 32


class AttachType(IntEnum):
    NONE = 0
    TRACE_RAW_TP = 23
    TRACE_FENTRY = 24
    TRACE_FEXIT = 25
    PERF_EVENT = 41
    TRACE_KPROBE_MULTI = 42
    NETFILTER = 45


# kind (elf.ProgramSpec.kind) -> (program type, expected attach type)
KINDS: Dict[str, Tuple[ProgType, AttachType]] = {
    "kprobe": (ProgType.KPROBE, AttachType.NONE),
    "kretprobe": (ProgType.KPROBE, AttachType.NONE),
    "kprobe.multi": (ProgType.KPROBE, AttachType.TRACE_KPROBE_MULTI),
    "kretprobe.multi": (ProgType.KPROBE, AttachType.TRACE_KPROBE_MULTI),
    "fentry": (ProgType.TRACING, AttachType.TRACE_FENTRY),
    "fexit": (ProgType.TRACING, AttachType.TRACE_FEXIT),
    "tp_btf": (ProgType.TRACING, AttachType.TRACE_RAW_TP),
    "raw_tp": (ProgType.RAW_TRACEPOINT, AttachType.NONE),
    "tracepoint": (ProgType.TRACEPOINT, AttachType.NONE),
    "netfilter": (ProgType.NETFILTER, AttachType.NETFILTER),
    "socket": (ProgType.SOCKET_FILTER, AttachType.NONE),
}

LOG_START = 1 << 18
LOG_MAX = 1 << 28
BTF_KIND_FUNC = 12
BTF_KIND_TYPEDEF = 8


def kernel_version_code(release: Optional[str] = None) -> int:
    """LINUX_VERSION_CODE of the running kernel (only very old kernels check it for kprobes)."""
    rel = release or os.uname().release
    nums = []
    for part in rel.replace("-", ".").split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit()) or "0"
        nums.append(int(digits))
    while len(nums) < 3:
        nums.append(0)
    return (nums[0] << 16) | (nums[1] << 8) | min(nums[2], 255)


def resolve_attach_btf_id(kernel_btf: Any, kind: str, target: str) -> int:
    """Type id in the kernel BTF that a fentry/fexit (FUNC target) or tp_btf (typedef
    btf_trace_<tp>) program attaches to."""
    if kind == "tp_btf":
        name, want = "btf_trace_" + target, BTF_KIND_TYPEDEF
    else:
        name, want = target, BTF_KIND_FUNC
    ids = [i for i in kernel_btf.find(name) if int(kernel_btf.type(i).kind) == want]
    if not ids:
        what = "tracepoint" if kind == "tp_btf" else "kernel function"
        raise AttachError(target, f"no {what} named {target!r} in the kernel BTF")
    return ids[0]


def _string_offsets(btf_raw: bytes) -> Dict[str, int]:
    """string -> offset in a raw BTF blob's string section (line_info refers to strings by offset)."""
    magic, _ver, _flags, hdr_len, _toff, _tlen, str_off, str_len = struct.unpack_from("<HBBIIIII", btf_raw)
    endian = "<" if magic == 0xEB9F else ">"
    if endian == ">":
        hdr_len, _toff, _tlen, str_off, str_len = struct.unpack_from(">IIIII", btf_raw, 4)
    base = hdr_len + str_off
    table = btf_raw[base:base + str_len]
    out: Dict[str, int] = {}
    pos = 0
    for chunk in table.split(b"\0"):
        out.setdefault(chunk.decode("utf-8", "replace"), pos)
        pos += len(chunk) + 1
    return out


class LoadedBtf:
    """Object BTF loaded into the kernel (its fd is the programs' prog_btf_fd)."""

    def __init__(self, raw: bytes) -> None:
        self.raw = bytes(raw)
        self._strings: Optional[Dict[str, int]] = None
        buf = sc.Buffer(self.raw)
        try:
            self._fd = sc.bpf_fd(sc.Cmd.BTF_LOAD, sc.BtfLoadAttr(btf=buf.addr, btf_size=len(buf)))
        except SyscallError as e:
            if e.errno not in (errno.EINVAL, errno.EACCES, errno.E2BIG, errno.ENOSPC):
                raise
            raise BTFError(f"kernel rejected the object BTF ({e}):\n{self._log(buf)}") from None

    def _log(self, buf: sc.Buffer) -> str:
        size = LOG_START
        while True:
            log = sc.Buffer(size)
            attr = sc.BtfLoadAttr(btf=buf.addr, btf_size=len(buf), btf_log_buf=log.addr,
                                  btf_log_size=size, btf_log_level=1)
            try:
                sc.Fd(sc.bpf(sc.Cmd.BTF_LOAD, attr)).close()
                return "(BTF load succeeded when retried with a log)"
            except SyscallError as e:
                if e.errno == errno.ENOSPC and size < LOG_MAX:
                    size *= 4
                    continue
                text = log.raw.split(b"\0", 1)[0].decode("utf-8", "replace")
                return "\n".join(text.strip().splitlines()[-20:])

    def string_offset(self, s: str) -> Optional[int]:
        if self._strings is None:
            self._strings = _string_offsets(self.raw)
        return self._strings.get(s)

    @property
    def fd(self) -> int:
        return self._fd.fd

    def close(self) -> None:
        self._fd.close()


def line_info_records(line_info: Iterable[Any], btf: LoadedBtf) -> Optional[bytes]:
    """struct bpf_line_info; None when a string is missing from the loaded BTF."""
    blob = getattr(line_info, "blob", None)
    if blob is not None:
        # raw records (elf.py's LineInfos): the object's string offsets, which the loaded BTF
        # keeps (btf.to_bytes preserves the string section), so nothing is decoded
        return blob()
    out = []
    for r in line_info:
        # offsets straight from .BTF.ext stay valid: the loaded BTF keeps the object's string table
        fname = getattr(r, "file_name_off", None)
        ltext = getattr(r, "line_off", None)
        if fname is None or ltext is None:
            fname, ltext = btf.string_offset(r.file_name), btf.string_offset(r.line_text)
        if fname is None or ltext is None:
            return None
        out.append(struct.pack("=IIII", r.insn_off // 8, fname, ltext, (r.line << 10) | (r.col & 0x3FF)))
    return b"".join(out)


class Program(sc.KernelObject):
    """A loaded program. kind/attach_target tell links.py how to attach it."""

    log = ""  # the verifier log, when a load was made with one

    def __init__(self, name: str, kind: str, insns: bytes, *, license: str = "GPL",
                 attach_target: str = "", attach_btf_id: int = 0, attach_btf_obj_fd: int = 0,
                 btf: Optional[LoadedBtf] = None, func_info: Sequence[Any] = (),
                 line_info: Sequence[Any] = (), prog_type: Optional[int] = None,
                 expected_attach_type: Optional[int] = None, log_level: int = 0) -> None:
        if kind not in KINDS and prog_type is None:
            raise ValueError(f"unknown program kind {kind!r}")
        ptype, atype = KINDS.get(kind, (ProgType.SOCKET_FILTER, AttachType.NONE))
        self._fd: Optional[sc.Fd] = None  # set once the kernel gave us one
        self.name = name
        self.kind = kind
        self.attach_target = attach_target
        self.attach_btf_id = attach_btf_id
        self.prog_type = int(ptype if prog_type is None else prog_type)
        self.expected_attach_type = int(atype if expected_attach_type is None else expected_attach_type)
        if len(insns) % 8:
            raise ValueError(f"program {name}: instruction bytes not a multiple of 8")
        self._keep = []  # buffers the attr points into, alive across retries
        insn_buf = self._pin(bytes(insns))
        lic = self._pin(license.encode() + b"\0")
        attr = sc.ProgLoadAttr(prog_type=self.prog_type, insn_cnt=len(insns) // 8, insns=insn_buf.addr,
                               license=lic.addr, prog_name=kernel_name(name).encode(),
                               expected_attach_type=self.expected_attach_type,
                               attach_btf_id=attach_btf_id, attach_btf_obj_fd=attach_btf_obj_fd)
        if self.prog_type == ProgType.KPROBE:
            attr.kern_version = kernel_version_code()
        if btf is not None:
            attr.prog_btf_fd = btf.fd
            # records as objects (elf.py's), or already in the kernel's form (prepared.py's)
            if func_info:
                fblob = func_info if isinstance(func_info, bytes) else func_info_records(func_info)
                fi = self._pin(fblob)
                attr.func_info, attr.func_info_cnt = fi.addr, len(fblob) // FUNC_INFO_SIZE
                attr.func_info_rec_size = FUNC_INFO_SIZE
            lblob = None
            if line_info:
                lblob = line_info if isinstance(line_info, bytes) else line_info_records(line_info, btf)
            if lblob:
                li = self._pin(lblob)
                attr.line_info, attr.line_info_cnt = li.addr, len(lblob) // LINE_INFO_SIZE
                attr.line_info_rec_size = LINE_INFO_SIZE
        self._attr = attr
        self._fd = self._load(attr, log_level)
        self._keep = []

    @classmethod
    def adopt(cls, fd: sc.Fd, name: str, kind: str, attach_target: str = "",
              attach_btf_id: int = 0) -> "Program":
        """A Program over an fd obtained elsewhere (a pinned program), ready for links.attach."""
        if kind not in KINDS:
            fd.close()
            raise ValueError(f"unknown program kind {kind!r}")
        ptype, atype = KINDS[kind]
        p = cls.__new__(cls)
        p._fd, p.name, p.kind = fd, name, kind
        p.attach_target, p.attach_btf_id = attach_target, attach_btf_id
        p.prog_type, p.expected_attach_type = int(ptype), int(atype)
        p._keep = []
        return p

    def _pin(self, data: bytes) -> sc.Buffer:
        b = sc.Buffer(data)
        self._keep.append(b)
        return b

    def _load(self, attr: sc.ProgLoadAttr, log_level: int) -> sc.Fd:
        what = f"program {self.name!r} ({self.kind}{'/' + self.attach_target if self.attach_target else ''})"
        if not log_level:
            try:
                return sc.bpf_fd(sc.Cmd.PROG_LOAD, attr, what=what)
            except SyscallError:
                # loaded again below, with a log to say why. (Not kept: an exception held in
                # a local of a frame of its own traceback is a cycle that keeps every caller's
                # locals, the kernel BTF of a start included, until the cycle collector runs.)
                pass
        size = LOG_START
        while True:
            log = sc.Buffer(size)
            attr.log_level, attr.log_size, attr.log_buf = max(log_level, 1), size, log.addr
            try:
                fd = sc.bpf_fd(sc.Cmd.PROG_LOAD, attr, what=what)
                self.log = log.raw.split(b"\0", 1)[0].decode("utf-8", "replace")
                return fd
            except SyscallError as e:
                if e.errno == errno.ENOSPC and size < LOG_MAX:
                    size *= 4
                    continue
                text = log.raw.split(b"\0", 1)[0].decode("utf-8", "replace")
                if text.strip():
                    raise VerifierError(self.name, text, e.errno) from None
                raise SyscallError("BPF_PROG_LOAD", e.errno,
                                   f"{what}: the kernel refused it without a verifier log") from None

    def info(self) -> sc.ProgInfo:
        return sc.obj_info(self.fd, sc.ProgInfo())

    def __repr__(self) -> str:
        return f"Program({self.name!r}, {self.kind}, fd={None if self.closed else self.fd})"
