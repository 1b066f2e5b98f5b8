"""The program cache's bookkeeping without a kernel: keys, locking, eviction, bpffs detection.

Eviction removes pinned directories with plain unlink/rmdir, so a temporary directory stands in
for the bpf filesystem here; pinning itself is tested in tests/kernel/test_progcache.py.
"""
from __future__ import annotations

import json
import os
import time

import pytest

from netbee import progcache
from netbee.loader import pinning

PARTS = {"backend": "auto", "config": "00ff", "ringbuf": 4194304, "code": [["tracer.py", 1, 2]]}


def _cache(tmp_path, n: int = 2) -> progcache.ProgramCache:
    return progcache.ProgramCache(bpf_dir=str(tmp_path / "bpf"), meta_dir=str(tmp_path / "meta"), max_entries=n)


def _fake_entry(cache: progcache.ProgramCache, parts: dict, boot: str | None = None, age: float = 0.0) -> str:
    """What Entry.store leaves behind: a pinned directory and a meta file (aged by `age` s)."""
    key, text = progcache.make_key(parts)
    os.makedirs(os.path.join(cache.bpf_dir, key), exist_ok=True)
    open(os.path.join(cache.bpf_dir, key, "prog_x"), "w").close()
    os.makedirs(cache.meta_dir, exist_ok=True)
    path = cache.meta_path(key)
    with open(path, "w") as f:
        json.dump({"format": progcache.FORMAT, "boot_id": boot or progcache.boot_id(), "key": key,
                   "parts": text}, f)
    t = time.time() - age
    os.utime(path, (t, t))
    return key


def test_key_is_stable_and_changes_with_every_part():
    key, text = progcache.make_key(PARTS)
    assert progcache.make_key(dict(reversed(list(PARTS.items())))) == (key, text)
    assert "." not in key and "/" not in key
    for name, other in (("config", "00fe"), ("ringbuf", 1 << 23), ("backend", "tracepoint"),
                        ("code", [["tracer.py", 1, 3]])):
        assert progcache.make_key(dict(PARTS, **{name: other}))[0] != key, name


def test_an_entry_is_locked_by_one_holder(tmp_path):
    cache = _cache(tmp_path)
    key, text = progcache.make_key(PARTS)
    first = cache.acquire(key, text)
    assert first is not None and first.meta is None
    assert cache.acquire(key, text) is None  # flock is per open file: a second holder is refused
    first.release()
    again = cache.acquire(key, text)
    assert again is not None
    again.release()


def test_meta_is_used_only_for_the_same_text_boot_and_format(tmp_path):
    cache = _cache(tmp_path)
    key = _fake_entry(cache, PARTS)
    _, text = progcache.make_key(PARTS)
    e = cache.acquire(key, text)
    assert e is not None and e.meta is not None and e.meta["key"] == key
    e.release()
    e = cache.acquire(key, text + " ")  # a checksum collision: a different key text
    assert e is not None and e.meta is None
    e.release()
    other = _fake_entry(cache, dict(PARTS, ringbuf=1), boot="an-earlier-boot")
    e = cache.acquire(other, progcache.make_key(dict(PARTS, ringbuf=1))[1])
    assert e is not None and e.meta is None
    e.release()


def test_eviction_drops_other_boots_then_least_recently_used_but_not_entries_in_use(tmp_path):
    cache = _cache(tmp_path, n=2)
    old_boot = _fake_entry(cache, dict(PARTS, ringbuf=1), boot="an-earlier-boot", age=1)
    oldest = _fake_entry(cache, dict(PARTS, ringbuf=2), age=30)
    busy_parts = dict(PARTS, ringbuf=3)
    busy = _fake_entry(cache, busy_parts, age=20)
    newer = _fake_entry(cache, dict(PARTS, ringbuf=4), age=10)
    holder = cache.acquire(*progcache.make_key(busy_parts))
    assert holder is not None
    try:
        removed = cache.evict(keep="the-new-one")
    finally:
        holder.release()
    # limit 2 with the new one: one old entry may stay; busy cannot go, so oldest and newer go
    assert set(removed) == {old_boot, oldest, newer}
    assert cache.keys() == [busy]
    assert os.listdir(cache.bpf_dir) == [busy]


def test_lock_files_and_pins_without_meta_are_cleaned(tmp_path):
    cache = _cache(tmp_path, n=4)
    e = cache.acquire(*progcache.make_key(PARTS))  # a run that died before storing
    e.release()
    os.makedirs(os.path.join(cache.bpf_dir, "deadbeef"))  # pins whose meta never got written
    os.makedirs(os.path.join(cache.bpf_dir, "deadbeef_tmp999999999"))  # a pin_set that died mid-way
    os.makedirs(os.path.join(cache.bpf_dir, f"cafe_tmp{os.getpid()}"))  # one still running
    assert set(cache.keys()) == {e.key, "deadbeef"}
    assert cache.evict(keep="x") == []   # removed, but not entries: nothing reported as evicted
    assert cache.keys() == [] and os.listdir(cache.meta_dir) == []
    assert os.listdir(cache.bpf_dir) == [f"cafe_tmp{os.getpid()}"]


def test_clear_keeps_entries_in_use(tmp_path):
    cache = _cache(tmp_path, n=4)
    a = _fake_entry(cache, PARTS)
    _fake_entry(cache, dict(PARTS, ringbuf=9))
    holder = cache.acquire(a, progcache.make_key(PARTS)[1])
    try:
        assert cache.clear() == (1, 1)
    finally:
        holder.release()
    assert cache.keys() == [a]
    assert cache.clear() == (1, 0)


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:21 / /sys rw,nosuid shared:2 - sysfs sysfs rw
40 23 0:35 / /sys/fs/bpf rw,nosuid shared:9 - bpf bpf rw,mode=700
41 22 0:36 / /mnt/with\\040space rw - tmpfs tmpfs rw
"""


@pytest.mark.parametrize("path,fstype", [("/sys/fs/bpf", "bpf"), ("/sys/fs/bpf/netbee/k", "bpf"),
                                         ("/sys/fs/bpfx", "sysfs"), ("/sys", "sysfs"), ("/", "ext4"),
                                         ("/mnt/with space/x", "tmpfs")])
def test_fs_type_at(path, fstype):
    assert pinning.fs_type_at(path, MOUNTINFO) == fstype


def test_pin_names_have_no_dots():
    assert pinning.pin_name(".rodata") == "_rodata" and pinning.pin_name("events") == "events"


def test_code_identity_is_read_once_per_process(monkeypatch):
    monkeypatch.setattr(progcache, "_code_identity", None)
    scans = []
    real = os.scandir

    def counting(path):
        scans.append(path)
        return real(path)
    monkeypatch.setattr(os, "scandir", counting)
    one = progcache.code_identity()
    assert len(scans) == 2 and any(name == "tracer.py" for name, _size, _mtime in one)
    one.append("edited by a caller")
    assert progcache.code_identity() == one[:-1] and len(scans) == 2
