"""Peak memory of the kernel BTF at start-up (the netbee command's VmHWM counts it): the raw file
is read straight into the type array, and the name index sorts named types as packed ints.

Bounds are on tracemalloc's peak (Python allocations only), so they do not depend on the load
of the machine; each is set between the measured old and new behaviour.
"""
from __future__ import annotations

import tracemalloc

import pytest

from netbee.loader.btf import Btf
from netbee.loader.errors import BTFError


def _traced_peak(fn):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_load_kernel_holds_the_file_once(vmlinux_copy):
    size = vmlinux_copy.stat().st_size
    btf, peak = _traced_peak(lambda: Btf.load_kernel(str(vmlinux_copy)))
    # reading the whole file first and slicing it held ~2.6x its size at the peak
    assert peak <= 1.25 * size, f"peak {peak / 2**20:.1f} MiB for a {size / 2**20:.1f} MiB file"
    same = Btf.parse(vmlinux_copy.read_bytes())
    assert len(btf) == len(same) and btf.to_bytes() == same.to_bytes()
    assert btf.find("sk_buff") == same.find("sk_buff")


def test_load_kernel_refuses_a_truncated_file(tmp_path, vmlinux_copy):
    cut = tmp_path / "cut"
    data = vmlinux_copy.read_bytes()
    for n in (len(data) - 7, len(data) // 2, 30):
        cut.write_bytes(data[:n])
        with pytest.raises(BTFError, match="truncated|exceed"):
            Btf.load_kernel(str(cut))


def test_name_index_sort_peak_per_type(vmlinux_copy):
    btf = Btf.parse(vmlinux_copy.read_bytes())
    idx = btf._idx()
    _, peak = _traced_peak(idx._sorted)
    per_type = peak / len(btf)
    # sorting every type through two lists of Python ints took ~70 bytes per type
    assert per_type <= 45, f"{per_type:.1f} bytes per type at the peak"
    packed = idx._sorted()
    assert list(packed) == sorted(packed) and len(set(packed)) == len(packed)
    keys = [p >> 24 for p in packed]
    assert 0 not in keys
    named = [n for n, i in enumerate(btf._offsets) if btf._words[i]]
    assert sorted(p & 0xFFFFFF for p in packed) == named   # every named type, once


def test_kernel_enum_values_outlive_the_parse(vmlinux_copy, monkeypatch):
    """During a trace the drop reason names are asked for after the tracer let go of the
    kernel BTF: answered from the memo, without reading the 5.5 MB again."""
    path = str(vmlinux_copy)
    values = Btf.kernel_enum_values("skb_drop_reason", path)
    assert values == Btf.parse(vmlinux_copy.read_bytes()).enum_values("skb_drop_reason")

    def no_parse(*a, **kw):
        raise AssertionError("parsed the BTF again")

    monkeypatch.setattr(Btf, "_read", classmethod(no_parse))
    monkeypatch.setattr(Btf, "parse", classmethod(no_parse))
    again = Btf.kernel_enum_values("skb_drop_reason", path)
    assert again == values and again is not values   # a copy: callers cannot edit the memo
    btf = Btf.load_kernel(path)                       # what the drop reason resolver does
    assert btf.enum_values("skb_drop_reason") == values
    with pytest.raises(AssertionError, match="parsed"):
        btf.find("sk_buff")                           # any other question needs the data
    monkeypatch.undo()
    assert btf.find("sk_buff") == Btf.parse(vmlinux_copy.read_bytes()).find("sk_buff")
    assert len(btf) > 1000 and btf.enum_values("skb_drop_reason") == values


def test_an_edited_kernel_btf_answers_from_its_own_types(vmlinux_copy):
    from netbee.loader.btf_types import Enum, EnumValue

    path = str(vmlinux_copy)
    Btf.kernel_enum_values("skb_drop_reason", path)
    btf = Btf.load_kernel(path)
    tid = btf.find("skb_drop_reason")[0]
    btf.replace(tid, Enum("skb_drop_reason", 4, False, [EnumValue("ONLY", 7)]))
    assert btf.enum_values("skb_drop_reason") == {"ONLY": 7}


def test_the_running_kernels_btf_mapped_or_read_is_the_same(monkeypatch):
    import mmap

    from netbee.loader import btf as btf_module
    from netbee.loader.kernel_btf_file import KERNEL_BTF_PATH, map_kernel_btf

    with open(KERNEL_BTF_PATH, "rb") as f:
        raw = f.read()
    real = mmap.mmap
    maps = []

    def mapping(*a, **kw):
        maps.append(a)
        return real(*a, **kw)

    def refusing(*a, **kw):
        maps.append(a)
        raise OSError(19, "No such device")   # what a kernel before 6.16 answers

    got = []
    for mmap_call in (mapping, refusing):
        monkeypatch.setattr(mmap, "mmap", mmap_call)
        monkeypatch.setattr(btf_module, "_PARSED", {})     # parse afresh
        monkeypatch.setattr(btf_module, "_PARSED_OK", set())
        got.append(Btf.load_kernel())
    # (this kernel may be older than 6.16: then both loads were read)
    assert len(maps) == 2, "load_kernel did not try to map the running kernel's BTF"
    want = Btf.parse(raw)
    for btf in got:
        assert len(btf) == len(want) and btf.to_bytes() == want.to_bytes()
        assert btf.find("sk_buff") == want.find("sk_buff") and btf.find("sk_buff")
    # an ordinary file is read, never mapped (its pages would count twice at the peak)
    with open(__file__, "rb") as f:
        assert map_kernel_btf(f, __file__) is None
    assert len(maps) == 2
