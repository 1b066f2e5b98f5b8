"""Maps on the running kernel: create, lookup/update/delete, iterate, per-CPU values, global data."""
from __future__ import annotations

import errno
import mmap
import struct
from types import SimpleNamespace

import pytest

from netbee.loader import maps as M
from netbee.loader.errors import SyscallError

pytestmark = pytest.mark.kernel


def test_hash_update_lookup_delete_iterate() -> None:
    with M.Map("nbk_hash", M.MapType.HASH, 4, 8, 16) as m:
        for i in range(5):
            m.update(i, struct.pack("=Q", i * 100))
        assert m.lookup(3) == struct.pack("=Q", 300)
        assert m.lookup(42) is None
        assert sorted(int.from_bytes(k, "little") for k in m.keys()) == [0, 1, 2, 3, 4]
        assert dict(m.items())[struct.pack("=I", 4)] == struct.pack("=Q", 400)
        assert m.delete(3) is True
        assert m.delete(3) is False
        assert m.lookup(3) is None
        with pytest.raises(SyscallError) as ei:
            m.update(1, b"\0" * 8, M.UPDATE_NOEXIST)
        assert ei.value.errno == errno.EEXIST and "BPF_MAP_UPDATE_ELEM" in str(ei.value)
        assert m.info().name == b"nbk_hash"
    assert m.closed


def test_lru_hash_evicts_instead_of_failing() -> None:
    with M.Map("nbk_lru", M.MapType.LRU_HASH, 4, 4, 8) as m:
        for i in range(64):
            m.update(i, struct.pack("=I", i))
        n = len(list(m.keys()))
        assert 0 < n <= 64 and m.lookup(63) == struct.pack("=I", 63)


def test_percpu_array_values_per_possible_cpu() -> None:
    ncpu = M.possible_cpus()
    with M.Map("nbk_pcpu", M.MapType.PERCPU_ARRAY, 4, 4, 2) as m:
        vals = [struct.pack("=I", 7 + c) for c in range(ncpu)]
        m.update_percpu(1, vals)
        assert m.lookup_percpu(1) == vals
        assert m.lookup_percpu(0) == [b"\0" * 4] * ncpu
        with pytest.raises(TypeError):
            m.lookup(0)


def test_parse_cpu_list() -> None:
    assert M.parse_cpu_list("0-3,5\n") == [0, 1, 2, 3, 5]
    assert M.parse_cpu_list("0") == [0]


def test_rodata_is_written_then_frozen() -> None:
    spec = SimpleNamespace(name=".rodata", type=M.MapType.ARRAY, key_size=4, value_size=12,
                           max_entries=1, flags=0, data=b"hello", btf_key_type_id=0,
                           btf_value_type_id=0)
    with M.Map.from_spec(spec) as m:
        assert m.flags & M.F_RDONLY_PROG
        assert m.lookup(0) == b"hello" + b"\0" * 7
        with pytest.raises(SyscallError) as ei:
            m.update(0, b"x" * 12)
        assert ei.value.errno == errno.EPERM


def test_data_map_mmapable() -> None:
    spec = SimpleNamespace(name=".data", type=M.MapType.ARRAY, key_size=4, value_size=8,
                           max_entries=1, flags=0, data=b"\x01\x02", btf_key_type_id=0,
                           btf_value_type_id=0)
    with M.Map.from_spec(spec, mmapable=True) as m:
        assert m.flags & M.F_MMAPABLE
        mm = mmap.mmap(m.fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        assert mm[:2] == b"\x01\x02"
        mm[2:4] = b"\x03\x04"
        mm.close()
        assert m.lookup(0) == b"\x01\x02\x03\x04" + b"\0" * 4


def test_ringbuf_and_stack_trace_create() -> None:
    with M.Map("nbk_rb", M.MapType.RINGBUF, 0, 0, 1 << 16) as rb:
        assert rb.info().type == M.MapType.RINGBUF
    with M.Map("nbk_stk", M.MapType.STACK_TRACE, 4, 8 * 32, 128) as st:
        assert st.stack(1) is None


def test_bad_map_names_the_call() -> None:
    with pytest.raises(SyscallError) as ei:
        M.Map("nbk_bad", M.MapType.RINGBUF, 0, 0, 1000)  # not a power-of-two page multiple
    assert "BPF_MAP_CREATE" in str(ei.value) and "nbk_bad" in str(ei.value)
    assert "power of two" in str(ei.value)
