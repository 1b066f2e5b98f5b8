"""The ctypes attr layouts in syscall.py against the running kernel's own types: vmlinux.h dumped from
/sys/kernel/btf/vmlinux by bpftool (the distribution's <linux/bpf.h> is older than the fields we use),
compiled with the system compiler."""
from __future__ import annotations

import ctypes
import shutil
import subprocess

import pytest

from netbee.loader import syscall as sc

# (our struct, our field path, C type, C member designator)
FIELDS = [
    (sc.MapCreateAttr, "map_type", "union bpf_attr", "map_type"),
    (sc.MapCreateAttr, "map_name", "union bpf_attr", "map_name"),
    (sc.MapCreateAttr, "btf_fd", "union bpf_attr", "btf_fd"),
    (sc.MapCreateAttr, "btf_vmlinux_value_type_id", "union bpf_attr", "btf_vmlinux_value_type_id"),
    (sc.MapCreateAttr, "map_extra", "union bpf_attr", "map_extra"),
    (sc.MapElemAttr, "map_fd", "union bpf_attr", "map_fd"),
    (sc.MapElemAttr, "key", "union bpf_attr", "key"),
    (sc.MapElemAttr, "value", "union bpf_attr", "value"),
    (sc.MapElemAttr, "value", "union bpf_attr", "next_key"),
    (sc.MapElemAttr, "flags", "union bpf_attr", "flags"),
    (sc.ProgLoadAttr, "insns", "union bpf_attr", "insns"),
    (sc.ProgLoadAttr, "license", "union bpf_attr", "license"),
    (sc.ProgLoadAttr, "log_buf", "union bpf_attr", "log_buf"),
    (sc.ProgLoadAttr, "kern_version", "union bpf_attr", "kern_version"),
    (sc.ProgLoadAttr, "prog_name", "union bpf_attr", "prog_name"),
    (sc.ProgLoadAttr, "expected_attach_type", "union bpf_attr", "expected_attach_type"),
    (sc.ProgLoadAttr, "prog_btf_fd", "union bpf_attr", "prog_btf_fd"),
    (sc.ProgLoadAttr, "func_info", "union bpf_attr", "func_info"),
    (sc.ProgLoadAttr, "func_info_cnt", "union bpf_attr", "func_info_cnt"),
    (sc.ProgLoadAttr, "line_info", "union bpf_attr", "line_info"),
    (sc.ProgLoadAttr, "line_info_cnt", "union bpf_attr", "line_info_cnt"),
    (sc.ProgLoadAttr, "attach_btf_id", "union bpf_attr", "attach_btf_id"),
    (sc.ProgLoadAttr, "attach_btf_obj_fd", "union bpf_attr", "attach_btf_obj_fd"),
    (sc.ProgLoadAttr, "fd_array", "union bpf_attr", "fd_array"),
    (sc.ProgLoadAttr, "log_true_size", "union bpf_attr", "log_true_size"),
    (sc.BtfLoadAttr, "btf", "union bpf_attr", "btf"),
    (sc.BtfLoadAttr, "btf_size", "union bpf_attr", "btf_size"),
    (sc.BtfLoadAttr, "btf_log_level", "union bpf_attr", "btf_log_level"),
    (sc.BtfLoadAttr, "btf_log_true_size", "union bpf_attr", "btf_log_true_size"),
    (sc.LinkCreateAttr, "target_fd", "union bpf_attr", "link_create.target_fd"),
    (sc.LinkCreateAttr, "attach_type", "union bpf_attr", "link_create.attach_type"),
    (sc.LinkCreateAttr, "flags", "union bpf_attr", "link_create.flags"),
    (sc.LinkCreateAttr, "u.target_btf_id", "union bpf_attr", "link_create.target_btf_id"),
    (sc.LinkCreateAttr, "u.perf_event.bpf_cookie", "union bpf_attr", "link_create.perf_event.bpf_cookie"),
    (sc.LinkCreateAttr, "u.kprobe_multi.cnt", "union bpf_attr", "link_create.kprobe_multi.cnt"),
    (sc.LinkCreateAttr, "u.kprobe_multi.syms", "union bpf_attr", "link_create.kprobe_multi.syms"),
    (sc.LinkCreateAttr, "u.kprobe_multi.cookies", "union bpf_attr", "link_create.kprobe_multi.cookies"),
    (sc.LinkCreateAttr, "u.tracing.cookie", "union bpf_attr", "link_create.tracing.cookie"),
    (sc.LinkCreateAttr, "u.netfilter.pf", "union bpf_attr", "link_create.netfilter.pf"),
    (sc.LinkCreateAttr, "u.netfilter.priority", "union bpf_attr", "link_create.netfilter.priority"),
    (sc.LinkCreateAttr, "u.netfilter.flags", "union bpf_attr", "link_create.netfilter.flags"),
    (sc.RawTracepointAttr, "prog_fd", "union bpf_attr", "raw_tracepoint.prog_fd"),
    (sc.RawTracepointAttr, "cookie", "union bpf_attr", "raw_tracepoint.cookie"),
    (sc.InfoByFdAttr, "info", "union bpf_attr", "info.info"),
    (sc.GetIdAttr, "next_id", "union bpf_attr", "next_id"),
    (sc.GetIdAttr, "open_flags", "union bpf_attr", "open_flags"),
    (sc.TestRunAttr, "ctx_out", "union bpf_attr", "test.ctx_out"),
    (sc.TestRunAttr, "batch_size", "union bpf_attr", "test.batch_size"),
    (sc.ProgInfo, "name", "struct bpf_prog_info", "name"),
    (sc.ProgInfo, "netns_ino", "struct bpf_prog_info", "netns_ino"),
    (sc.ProgInfo, "btf_id", "struct bpf_prog_info", "btf_id"),
    (sc.ProgInfo, "run_cnt", "struct bpf_prog_info", "run_cnt"),
    (sc.ProgInfo, "recursion_misses", "struct bpf_prog_info", "recursion_misses"),
    (sc.ProgInfo, "verified_insns", "struct bpf_prog_info", "verified_insns"),
    (sc.MapInfo, "name", "struct bpf_map_info", "name"),
    (sc.LinkInfo, "prog_id", "struct bpf_link_info", "prog_id"),
    (sc.PerfEventAttr, "config1", "struct perf_event_attr", "config1"),
    (sc.PerfEventAttr, "config2", "struct perf_event_attr", "config2"),
    (sc.PerfEventAttr, "wakeup_events", "struct perf_event_attr", "wakeup_events"),
    (sc.PerfEventAttr, "sample_max_stack", "struct perf_event_attr", "sample_max_stack"),
]


def _offset(struct: type, path: str) -> int:
    off = 0
    for part in path.split("."):
        off += getattr(struct, part).offset
        struct = dict(struct._fields_)[part]
    return off


def _c_offsets(tmp_path) -> list:
    cc = shutil.which("cc") or shutil.which("clang-19")
    bpftool = shutil.which("bpftool")
    assert cc and bpftool, "cc and bpftool are needed to check the layouts against the kernel's types"
    vmlinux_h = tmp_path / "vmlinux.h"
    with open(vmlinux_h, "w") as out:
        subprocess.run([bpftool, "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c"],
                       check=True, stdout=out)
    lines = ['#include "vmlinux.h"', "int printf(const char *, ...);", "int main(void) {"]
    for _, _, ctype, member in FIELDS:
        lines.append(f'  printf("%lu\\n", (unsigned long)__builtin_offsetof({ctype}, {member}));')
    lines.append(f'  printf("%d\\n", sizeof(struct perf_event_attr) >= {ctypes.sizeof(sc.PerfEventAttr)});')
    lines.append("  return 0; }")
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    subprocess.run([cc, "-o", str(exe), str(src)], check=True)
    return [int(x) for x in subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()]


def test_attr_layouts_match_uapi_headers(tmp_path) -> None:
    got = _c_offsets(tmp_path)
    mismatches = []
    for (struct, path, ctype, member), c_off in zip(FIELDS, got):
        ours = _offset(struct, path)
        if ours != c_off:
            mismatches.append(f"{struct.__name__}.{path}={ours} but {ctype}.{member}={c_off}")
    assert not mismatches, mismatches
    assert got[-1] == 1


def test_fake_door_sees_command_and_errno_names_it(monkeypatch) -> None:
    calls = []

    def fake(nr, *args):
        calls.append((nr, args))
        raise OSError(1, "nope")

    monkeypatch.setattr(sc, "door", fake)
    attr = sc.MapFreezeAttr(map_fd=5)
    with pytest.raises(sc.SyscallError) as ei:
        sc.bpf(sc.Cmd.MAP_FREEZE, attr, what="map x")
    assert calls == [(sc.NR_BPF, (sc.Cmd.MAP_FREEZE, ctypes.addressof(attr), ctypes.sizeof(attr)))]
    assert "BPF_MAP_FREEZE" in str(ei.value) and "EPERM" in str(ei.value) and "map x" in str(ei.value)
    assert ei.value.errno == 1


def test_fd_close_is_idempotent(tmp_path) -> None:
    import os
    r, w = os.pipe()
    os.close(w)
    f = sc.Fd(r, "pipe")
    with f:
        assert f.fileno() == r
    assert f.closed
    f.close()
    with pytest.raises(ValueError):
        f.fileno()
    with pytest.raises(OSError):
        os.fstat(r)


def test_loader_exports_resolve_lazily() -> None:
    import subprocess
    import sys
    code = ("import sys, netbee.loader.btf, netbee.loader.elf\n"
            "assert 'netbee.loader.syscall' not in sys.modules, 'pure import pulled in the syscall door'\n"
            "import netbee.loader as L\n"
            "for n in L.__all__: getattr(L, n)\n"
            "assert 'netbee.loader.syscall' in sys.modules\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
