"""Loaded programs kept for the next run of the same command (start-up, issue 8).

Most of a cold start is spent on work whose result is the same every time the same command runs
on the same boot: reading the kernel BTF, planning the hooks, relocating and verifying ~10
programs (~0.5 s of CPU). The first run pins its programs and maps in the bpf filesystem
(BPF_DIR/<key>/) and writes what it decided (backend, hook plan, skipped hooks, the global
variables' places) to META_DIR/<key>.json; the next run with the same key opens them and only
attaches. The key is a digest of everything the loaded programs depend on; the tracer builds it
(netbee/tracer.py, _cache_key).

Per-run state is outside the programs' code: the tracer resets the maps it reuses and writes its
own pid into a global before attaching. One process at a time uses an entry (flock on
META_DIR/<key>.lock): a concurrent run of the same command loads a private, unpinned copy. At most
MAX_ENTRIES entries are kept, least recently used evicted first; entries of an earlier boot are
dropped when seen (their pins went with the reboot). `netbee --no-cache` neither reads nor writes
the cache, `netbee --clear-cache` empties it. What an entry holds in the kernel: the programs (a
few hundred KB of code) and the maps, the ring buffer (--ringbuf-size, 4 MiB by default) the
largest; nothing is attached while no netbee runs.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
import zlib
from typing import Any, Dict, List, Optional, Tuple

from netbee.cachefiles import dead_temporaries, remove_quietly
from netbee.loader import pinning

FORMAT = 1
MAX_ENTRIES = 4
BPF_DIR = os.path.join(pinning.BPFFS_ROOT, "netbee")
META_DIR = "/run/netbee/cache"
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def boot_id() -> str:
    with open(BOOT_ID_PATH) as f:
        return f.read().strip()


def archive_identity() -> Optional[List[Any]]:
    """(path, size, mtime, inode) of the zip application netbee runs from (scripts/pyz_main.py
    extracts it afresh each run), else None."""
    import netbee

    archive = getattr(netbee, "archive", None)
    if archive is None:
        return None
    st = os.stat(archive)
    return [archive, st.st_size, st.st_mtime_ns, st.st_ino]


def code_identity() -> List[Any]:
    """(name, size, mtime) of netbee's own code: a changed loader must not reuse what an older
    one loaded. From a zip application, the archive's identity. Taken once per process: the
    code that runs is what was imported (a start asks ~6 times, ~0.7 ms each)."""
    global _code_identity
    if _code_identity is None:
        _code_identity = _read_code_identity()
    return list(_code_identity)


_code_identity: Optional[List[Any]] = None


def _read_code_identity() -> List[Any]:
    archive = archive_identity()
    if archive is not None:
        return archive
    here = os.path.dirname(os.path.abspath(__file__))
    out: List[Any] = []
    for d in (here, os.path.join(here, "loader")):
        with os.scandir(d) as it:
            for e in it:
                if e.name.endswith(".py"):
                    st = e.stat()
                    out.append((os.path.relpath(e.path, here), st.st_size, st.st_mtime_ns))
    return sorted(out)


def make_key(parts: Dict[str, Any]) -> Tuple[str, str]:
    """(name, text) of the key parts (JSON-serialisable): the name is a short checksum for file
    names; an entry is used only if its stored text equals this one, so two keys whose checksums
    collide only replace each other. (A checksum, not hashlib: loading OpenSSL costs ~5 ms.)"""
    text = json.dumps([FORMAT, parts], sort_keys=True, separators=(",", ":"), default=str)
    raw = text.encode()
    return f"{zlib.crc32(raw):08x}{zlib.adler32(raw):08x}{len(raw):x}", text


class Entry:
    """One key's slot, locked by this process until release(). meta is None on a miss."""

    def __init__(self, cache: "ProgramCache", key: str, text: str, lock_fd: int,
                 meta: Optional[Dict[str, Any]]) -> None:
        self.cache = cache
        self.key = key
        self.text = text
        self.meta = meta
        self._lock_fd: Optional[int] = lock_fd

    @property
    def pinned_dir(self) -> str:
        return os.path.join(self.cache.bpf_dir, self.key)

    def open(self, programs: List[Tuple[str, str, str, int]], maps: List[str]) -> pinning.PinnedSet:
        """The pinned programs and maps (SyscallError ENOENT if gone)."""
        objs = pinning.open_set(self.pinned_dir, programs, maps)
        try:
            os.utime(self.cache.meta_path(self.key))  # recently used: evicted last
        except OSError:
            pass
        return objs

    def store(self, programs: Dict[str, Any], maps: Dict[str, Any], meta: Dict[str, Any]) -> List[str]:
        """Pin the loaded objects and write meta; then evict the oldest entries beyond the limit.
        Returns the evicted keys."""
        os.makedirs(self.cache.bpf_dir, exist_ok=True)
        pinning.pin_set(self.pinned_dir, programs, maps)
        doc = dict(meta, format=FORMAT, boot_id=boot_id(), key=self.key, parts=self.text, created=time.time())
        path = self.cache.meta_path(self.key)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.rename(tmp, path)  # the meta appears only once every pin is in place
        self.meta = doc
        return self.cache.evict(keep=self.key)

    def discard(self) -> None:
        """Forget this entry (it failed to open): remove its meta and pins, keep the lock."""
        remove_quietly(self.cache.meta_path(self.key))
        pinning.remove_set(self.pinned_dir)
        self.meta = None

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


class ProgramCache:
    def __init__(self, bpf_dir: str = BPF_DIR, meta_dir: str = META_DIR, max_entries: int = MAX_ENTRIES,
                 bpffs_root: str = pinning.BPFFS_ROOT) -> None:
        self.bpffs_root = bpffs_root   # the bpf filesystem mount that holds bpf_dir
        self.bpf_dir = bpf_dir
        self.meta_dir = meta_dir
        self.max_entries = max_entries

    def meta_path(self, key: str) -> str:
        return os.path.join(self.meta_dir, key + ".json")

    def _lock_path(self, key: str) -> str:
        return os.path.join(self.meta_dir, key + ".lock")

    def _try_lock(self, key: str) -> Optional[int]:
        """The locked fd of key's lock file, or None if another process holds it."""
        path = self._lock_path(key)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            except BaseException:
                os.close(fd)
                raise
            # An evicting process unlinks the lock file while holding it: a lock on the unlinked
            # inode would not exclude the next process, which creates a new file. Retry then.
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)

    def acquire(self, key: str, text: str) -> Optional[Entry]:
        """Lock the entry of make_key()'s (key, text) for this process; None when another process
        is using it. The entry's meta is None unless it was stored for exactly this text."""
        os.makedirs(self.meta_dir, mode=0o700, exist_ok=True)
        fd = self._try_lock(key)
        if fd is None:
            return None
        meta = self._read_meta(key)
        if meta is not None and (meta.get("format") != FORMAT or meta.get("boot_id") != boot_id()
                                 or meta.get("key") != key or meta.get("parts") != text):
            meta = None
        return Entry(self, key, text, fd, meta)

    def _read_meta(self, key: str) -> Optional[Dict[str, Any]]:
        try:
            with open(self.meta_path(key)) as f:
                doc = json.load(f)
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def keys(self) -> List[str]:
        """Keys with a meta file, a lock file or a pinned directory, least recently used first."""
        found: Dict[str, float] = {}
        try:
            for name in os.listdir(self.meta_dir):
                key, dot, ext = name.partition(".")
                if ext == "json":
                    found[key] = os.stat(os.path.join(self.meta_dir, name)).st_mtime
                elif ext == "lock":
                    found.setdefault(key, 0.0)  # a run that never stored (it failed, or is loading)
        except FileNotFoundError:
            pass
        try:
            for name in os.listdir(self.bpf_dir):
                if "_tmp" not in name:
                    found.setdefault(name, 0.0)  # pins without meta: a run died between the two
        except FileNotFoundError:
            pass
        return sorted(found, key=lambda k: (found[k], k))

    def _remove(self, key: str) -> bool:
        """Remove key's entry unless a process holds it."""
        fd = self._try_lock(key)
        if fd is None:
            return False
        try:
            remove_quietly(self.meta_path(key))
            pinning.remove_set(os.path.join(self.bpf_dir, key))
            remove_quietly(self._lock_path(key))
        finally:
            os.close(fd)
        return True

    def _sweep_partial_pins(self) -> None:
        """Directories pinning.pin_set() left behind when its process died mid-way."""
        for path in dead_temporaries(self.bpf_dir, "_tmp"):
            pinning.remove_set(path)

    def evict(self, keep: str) -> List[str]:
        """Drop entries of another boot, then the least recently used beyond max_entries. Returns
        the entries dropped; leftovers without meta (a run that never stored) go silently."""
        self._sweep_partial_pins()
        keys = [k for k in self.keys() if k != keep]
        this_boot = boot_id()
        removed, gone = [], set()
        for k in keys:
            meta = self._read_meta(k)
            if (meta is None or meta.get("boot_id") != this_boot) and self._remove(k):
                gone.add(k)
                if meta is not None:
                    removed.append(k)
        keys = [k for k in keys if k not in gone]
        count = len(keys) + 1
        for k in keys:  # oldest first; one in use stays and still counts
            if count <= self.max_entries:
                break
            if self._remove(k):
                removed.append(k)
                count -= 1
        return removed

    def clear(self) -> Tuple[int, int]:
        """Remove every entry not in use: (removed, in use)."""
        removed = busy = 0
        for k in self.keys():
            if self._remove(k):
                removed += 1
            else:
                busy += 1
        return removed, busy
