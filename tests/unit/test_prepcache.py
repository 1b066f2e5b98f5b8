"""netbee/prepcache.py and netbee/loader/prepared.py without a kernel: the file format, its
checks, eviction, and swapping a replaced function's body."""
from __future__ import annotations

import mmap
import os

import pytest

from netbee import prepcache
from netbee.loader import insn as I
from netbee.loader.errors import ObjectFileError
from netbee.loader.map_spec import MapReloc, MapSpec
from netbee.loader.prepared import PreparedObject, PreparedProgram


@pytest.fixture
def cache(tmp_path):
    return prepcache.PreparedCache(str(tmp_path / "p"), max_entries=3)


def test_store_then_load_for_exactly_the_same_text(cache):
    cache.store("k1", "parts-1", {"a": [1, 2]})
    assert cache.load("k1", "parts-1") == {"a": [1, 2]}
    assert oct(os.stat(cache.directory).st_mode & 0o777) == "0o700"
    assert oct(os.stat(cache.path("k1")).st_mode & 0o777) == "0o600"
    # a checksum collision between two keys' texts: the other text is a miss, and the file goes
    assert cache.load("k1", "parts-2") is None
    assert not os.path.exists(cache.path("k1"))


@pytest.mark.parametrize("damage", ["flip", "truncate", "header", "empty", "not-json", "no-value"])
def test_a_damaged_file_is_a_miss_and_removed(cache, damage):
    cache.store("k", "t", {"x": "y" * 100})
    path = cache.path("k")
    raw = bytearray(open(path, "rb").read())
    if damage == "flip":
        raw[-10] ^= 1
    elif damage == "truncate":
        raw = raw[:-5]
    elif damage == "header":
        raw = raw.replace(b"netbee-prepared-1", b"netbee-prepared-9", 1)
    elif damage == "empty":
        raw = bytearray()
    elif damage == "not-json":
        import zlib
        body = b"{nope"
        raw = bytearray(b"netbee-prepared-1 %08x %d\n" % (zlib.crc32(body), len(body)) + body)
    else:
        import json
        import zlib
        body = json.dumps({"parts": "t", "value": [1]}).encode()
        raw = bytearray(b"netbee-prepared-1 %08x %d\n" % (zlib.crc32(body), len(body)) + body)
    open(path, "wb").write(raw)
    assert cache.load("k", "t") is None
    assert not os.path.exists(path)


def test_least_recently_used_go_first_and_dead_temporaries_are_swept(cache):
    for n, k in enumerate(["a", "b", "c"]):
        cache.store(k, k, {})
        os.utime(cache.path(k), (1000 + n, 1000 + n))
    assert cache.load("a", "a") == {}          # used: now the most recent
    stale = cache.path("x") + ".tmp999999999"  # a pid that cannot exist
    open(stale, "w").close()
    assert cache.store("d", "d", {}) == ["b"]
    assert sorted(cache.keys()) == ["a", "c", "d"] and not os.path.exists(stale)
    assert cache.clear() == 3 and cache.keys() == []


def test_file_identity_follows_the_content(tmp_path):
    p = tmp_path / "btf"
    p.write_bytes(b"x" * 3_000_000)
    one = prepcache.file_identity(str(p))
    p.write_bytes(b"x" * 2_999_999 + b"y")
    two = prepcache.file_identity(str(p))
    assert one[0] == two[0] == 3_000_000 and one != two
    assert prepcache.kernel_identity(str(p))["btf"] == two


BODY = I.mov64_imm(0, 1) + I.exit_insn()


def _program(**kw) -> PreparedProgram:
    code = I.mov64_imm(0, 0) * 4 + I.exit_insn() + I.mov64_imm(0, 0) + I.exit_insn()
    args = dict(name="p", kind="tracepoint", attach_target="net/x", license="GPL", insns=code,
                map_relocs=[MapReloc(0, "m", I.BPF_PSEUDO_MAP_FD, 0)], replaced_at={"f": 5})
    args.update(kw)
    return PreparedProgram(**args)


def test_with_body_swaps_the_tail_and_keeps_the_rest():
    p = _program()
    q = p.with_body("f", BODY)
    assert q.insns == p.insns[:40] + BODY and q.map_relocs == p.map_relocs and q is not p
    assert p.with_body("other", BODY) is p       # a program that never reaches it
    with pytest.raises(ObjectFileError, match="whole number"):
        p.with_body("f", BODY[:-1])
    with pytest.raises(ObjectFileError, match="relocations"):
        _program(map_relocs=[MapReloc(5, "m")]).with_body("f", BODY)
    with pytest.raises(ObjectFileError, match="not its last"):
        _program(replaced_at={"f": 5, "g": 6}).with_body("f", BODY)


def test_documents_round_trip_and_inconsistent_ones_are_refused():
    obj = PreparedObject("GPL", b"\x9f\xeb", {"m": MapSpec("m", 2, 4, 8, 1, data=b"\1" * 8)},
                         {"g": ("m", 4, 4)}, {"p": _program()}, ["a warning"])
    doc = obj.to_doc()
    again = PreparedObject.from_doc(doc)
    assert again == obj and again.to_doc() == doc
    again.set_global("g", b"\2\2\2\2")
    assert again.maps["m"].data == b"\1" * 4 + b"\2" * 4 and again.get_global("g") == b"\2" * 4
    bad_reloc = dict(doc, programs=[dict(doc["programs"][0], map_relocs=[[6, "m", 1, 0]])])
    bad_map = dict(doc, programs=[dict(doc["programs"][0], map_relocs=[[0, "zz", 1, 0]])])
    bad_global = dict(doc, globals={"g": ["m", 6, 4]})
    bad_b64 = dict(doc, btf="!!")
    for bad in (bad_reloc, bad_map, bad_global, bad_b64):
        with pytest.raises(ValueError):
            PreparedObject.from_doc(bad)


def test_the_running_kernels_btf_identity_is_computed_once_per_boot(tmp_path, monkeypatch):
    calls = []
    real = prepcache.file_identity

    def counting(path):
        calls.append(path)
        return real(path)
    monkeypatch.setattr(prepcache, "file_identity", counting)
    if not os.path.exists(prepcache.KERNEL_BTF):
        pytest.fail(f"{prepcache.KERNEL_BTF} missing: this test needs a kernel with BTF")
    one = prepcache.kernel_identity(memo_dir=str(tmp_path))
    two = prepcache.kernel_identity(memo_dir=str(tmp_path))
    assert one == two and calls == [prepcache.KERNEL_BTF]
    memo = tmp_path / "kernel-btf-identity.json"
    memo.write_text('{"boot_id": "another boot", "btf": [1, "x"]}')
    assert prepcache.kernel_identity(memo_dir=str(tmp_path)) == one and len(calls) == 2
    memo.write_text("not json")
    assert prepcache.kernel_identity(memo_dir=str(tmp_path)) == one and len(calls) == 3


def test_kernel_facts_live_beside_the_entries_and_go_with_clear(cache, monkeypatch):
    monkeypatch.setattr(prepcache, "MAX_FACTS", 2)
    assert cache.load_facts("kA", "kernel-A") == {}
    cache.store_facts("kA", "kernel-A", {"btf_func_ids": {"f": 7}})
    assert cache.load_facts("kA", "kernel-A") == {"btf_func_ids": {"f": 7}}
    assert cache.load_facts("kA", "kernel-B") == {}          # another kernel's text: a miss, removed
    assert cache.keys("facts") == []
    for n, k in enumerate(["kA", "kB", "kC"]):
        cache.store_facts(k, k, {"n": n})
        os.utime(cache.path(k, "facts"), (1000 + n, 1000 + n))
    assert sorted(cache.keys("facts")) == ["kB", "kC"]       # bounded by MAX_FACTS, oldest out
    # entries and facts do not count against each other
    for k in ["a", "b", "c"]:
        cache.store(k, k, {})
    assert sorted(cache.keys()) == ["a", "b", "c"] and sorted(cache.keys("facts")) == ["kB", "kC"]
    assert cache.clear() == 3 and cache.keys() == [] and cache.keys("facts") == []


def _refuse_mmap(monkeypatch) -> list:
    refused = []

    def refuse(*a, **kw):
        refused.append(a)
        raise OSError(22, "Invalid argument")
    monkeypatch.setattr(mmap, "mmap", refuse)
    return refused


def test_file_identity_mapped_or_read_is_the_same(tmp_path, monkeypatch):
    p = tmp_path / "btf"
    p.write_bytes(bytes(range(256)) * 9000)
    plain = prepcache.file_identity(str(p))
    assert plain[0] == 256 * 9000
    refused = _refuse_mmap(monkeypatch)
    assert prepcache.file_identity(str(p)) == plain and not refused   # an ordinary file is read
    if not os.path.exists(prepcache.KERNEL_BTF):
        pytest.fail(f"{prepcache.KERNEL_BTF} missing: this test needs a kernel with BTF")
    read = prepcache.file_identity(prepcache.KERNEL_BTF)
    assert len(refused) == 1   # the kernel's own BTF is mapped where the kernel allows it
    monkeypatch.undo()
    assert prepcache.file_identity(prepcache.KERNEL_BTF) == read
