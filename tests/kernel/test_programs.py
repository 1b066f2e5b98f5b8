"""Program load on the running kernel: program types, verifier rejection with its log, attach ids."""
from __future__ import annotations

import errno
import struct
import pytest

from netbee.loader import programs as P
from netbee.loader import syscall as sc
from netbee.loader.errors import AttachError, VerifierError

pytestmark = pytest.mark.kernel


# --- a few lines of hand assembly (shared with the other loader kernel tests) ---------------------
def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def mov_imm(dst: int, imm: int) -> bytes:
    return insn(0xB7, dst, imm=imm)


def mov_reg(dst: int, src: int) -> bytes:
    return insn(0xBF, dst, src)


def add_imm(dst: int, imm: int) -> bytes:
    return insn(0x07, dst, imm=imm)


def ld_map_fd(dst: int, fd: int) -> bytes:
    return insn(0x18, dst, 1, imm=fd) + insn(0)


def stx_dw(dst: int, src: int, off: int) -> bytes:
    return insn(0x7B, dst, src, off)


def stx_w(dst: int, src: int, off: int) -> bytes:
    return insn(0x63, dst, src, off)


def atomic_add_dw(dst: int, src: int, off: int) -> bytes:
    return insn(0xDB, dst, src, off, 0)


def jeq_imm(dst: int, imm: int, off: int) -> bytes:
    return insn(0x15, dst, off=off, imm=imm)


def call(helper: int) -> bytes:
    return insn(0x85, imm=helper)


def exit_() -> bytes:
    return insn(0x95)


RET0 = mov_imm(0, 0) + exit_()
RET1 = mov_imm(0, 1) + exit_()


def ringbuf_pid_prog(rb_fd: int, ret: int = 0) -> bytes:
    """Writes the 8-byte bpf_get_current_pid_tgid() into the ring buffer, returns `ret`."""
    return (call(14) + stx_dw(10, 0, -8) + ld_map_fd(1, rb_fd) + mov_reg(2, 10) + add_imm(2, -8)
            + mov_imm(3, 8) + mov_imm(4, 0) + call(130) + mov_imm(0, ret) + exit_())


def counter_prog(array_fd: int, ret: int = 0) -> bytes:
    """Adds 1 to the u64 at key 0 of an array map, returns `ret`."""
    return (mov_imm(1, 0) + stx_w(10, 1, -4) + ld_map_fd(1, array_fd) + mov_reg(2, 10) + add_imm(2, -4)
            + call(1) + jeq_imm(0, 0, 2) + mov_imm(1, 1) + atomic_add_dw(0, 1, 0)
            + mov_imm(0, ret) + exit_())


def kernel_btf():
    from netbee.loader.btf import Btf  # Loader I's module; these tests fail until it exists
    return Btf.load_kernel()


# --- tests ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["raw_tp", "tracepoint", "netfilter", "kprobe"])
def test_trivial_programs_load(kind: str) -> None:
    with P.Program(f"nbk_{kind.replace('.', '_')}", kind, RET0) as p:
        info = p.info()
        assert info.type == P.KINDS[kind][0]
        assert info.name == f"nbk_{kind}".encode()[:15]
        assert info.id in sc.prog_ids()
    assert p.closed


def test_tp_btf_loads_with_attach_btf_id() -> None:
    btf_id = P.resolve_attach_btf_id(kernel_btf(), "tp_btf", "task_rename")
    with P.Program("nbk_tpbtf", "tp_btf", RET0, attach_target="task_rename", attach_btf_id=btf_id) as p:
        assert p.info().type == P.ProgType.TRACING


def test_unknown_attach_target_names_it() -> None:
    with pytest.raises(AttachError) as ei:
        P.resolve_attach_btf_id(kernel_btf(), "fentry", "no_such_function_nbk")
    assert "no_such_function_nbk" in str(ei.value)
    with pytest.raises(AttachError) as ei:
        P.resolve_attach_btf_id(kernel_btf(), "tp_btf", "no_such_tp_nbk")
    assert "no_such_tp_nbk" in str(ei.value)


def test_verifier_rejection_shows_log_tail() -> None:
    bad = exit_()  # R0 never written
    with pytest.raises(VerifierError) as ei:
        P.Program("nbk_bad", "raw_tp", bad)
    assert "R0 !read_ok" in str(ei.value)
    assert ei.value.errno == errno.EACCES
    assert "nbk_bad" in str(ei.value)


def test_huge_log_grows_buffer() -> None:
    # a long straight-line program makes a log longer than the first buffer at log level 2
    body = b"".join(mov_imm(1, i) for i in range(12000))
    p = P.Program("nbk_biglog", "raw_tp", body + RET0, log_level=2)
    try:
        assert len(p.log) > P.LOG_START
    finally:
        p.close()


def test_kernel_version_code() -> None:
    assert P.kernel_version_code("6.1.0-27-amd64") == (6 << 16) | (1 << 8)
    assert P.kernel_version_code("5.4.300") == (5 << 16) | (4 << 8) | 255


def test_prog_fd_by_id_reaches_the_same_program() -> None:
    with P.Program("nbk_byid", "raw_tp", RET0) as p:
        pid = p.info().id
        with sc.prog_fd_by_id(pid) as fd:
            assert sc.obj_info(fd.fd, sc.ProgInfo()).id == pid
