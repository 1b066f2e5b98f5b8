"""Relocated programs kept on disk, for a first run with a new filter or after a reboot (issue 8).

The program cache (progcache.py) serves the exact command again on the same boot. Most of what a
fresh load costs in Python does not depend on the command's filter or on the boot, though: reading
the kernel BTF (~5 MB), planning the hooks, parsing the ELF object and CO-RE. This cache keeps that
result, a PreparedObject (netbee/loader/prepared.py) with the hook plan, in DIR/<key>.json, keyed
by what it depends on: netbee's code, the object file, the kernel (its release, build and the
whole BTF's checksum), the loaded modules, the backend. A run with a new filter reads it, puts the
filter's code in (with_body) and its config in the globals, and goes straight to the verifier.

Files are written whole under a temporary name and renamed; a file that does not parse, fails its
checksum or was made for another key is a miss and is removed. At most MAX_ENTRIES files are
kept, least recently used first out. DIR is root's (0700): what it holds is loaded into the kernel.

Beside them, DIR/<key>.facts keeps small facts about one kernel (keyed by kernel_identity alone)
that cost a parse of its whole BTF to learn, such as the BTF id of the function the fentry probe
tries (netbee.loader.features): a first run after a reboot then needs no kernel BTF at all.
"""
from __future__ import annotations

import json
import os
import zlib
from typing import Any, Dict, List, Optional

from netbee.cachefiles import dead_temporaries, remove_quietly
from netbee.loader.kernel_btf_file import KERNEL_BTF_PATH, map_kernel_btf

FORMAT = 1
MAX_ENTRIES = 4
MAX_FACTS = 8          # kernels whose facts are kept (a few hundred bytes each)
ENTRY, FACTS = "json", "facts"   # file name extensions
DIR = "/var/cache/netbee/prepared"
KERNEL_BTF = KERNEL_BTF_PATH
MEMO_DIR = "/run/netbee"   # emptied by a reboot


def file_identity(path: str) -> List[Any]:
    """(size, crc32) of a whole file: the kernel's BTF has no version of its own, and on a
    rebuilt kernel of the same release only its content tells."""
    crc, size = 0, 0
    with open(path, "rb") as f:
        mapped = map_kernel_btf(f, path)
        if mapped is not None:
            with mapped:
                return [len(mapped), f"{zlib.crc32(mapped):08x}"]
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
    return [size, f"{crc:08x}"]


def kernel_identity(btf_path: Optional[str] = None, memo_dir: str = MEMO_DIR) -> Dict[str, Any]:
    u = os.uname()
    btf = file_identity(btf_path) if btf_path else _running_kernel_btf_identity(memo_dir)
    return {"release": u.release, "build": u.version, "machine": u.machine,
            "btf": btf, "btf_path": os.path.abspath(btf_path) if btf_path else None}


def _running_kernel_btf_identity(memo_dir: str) -> List[Any]:
    """file_identity(KERNEL_BTF), computed once per boot: the running kernel's BTF does not
    change until the next boot, and reading 5 MB costs 5-10 ms on every start."""
    from netbee.progcache import boot_id

    memo = os.path.join(memo_dir, "kernel-btf-identity.json")
    boot = boot_id()
    try:
        with open(memo) as f:
            doc = json.load(f)
        if doc.get("boot_id") == boot and isinstance(doc.get("btf"), list):
            return doc["btf"]
    except (OSError, ValueError, AttributeError):
        pass
    ident = file_identity(KERNEL_BTF)
    try:
        os.makedirs(memo_dir, mode=0o700, exist_ok=True)
        tmp = f"{memo}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({"boot_id": boot, "btf": ident}, f)
        os.rename(tmp, memo)
    except OSError:
        pass   # computed again next time
    return ident


class PreparedCache:
    def __init__(self, directory: str = DIR, max_entries: int = MAX_ENTRIES) -> None:
        self.directory = directory
        self.max_entries = max_entries

    def path(self, key: str, ext: str = ENTRY) -> str:
        return os.path.join(self.directory, f"{key}.{ext}")

    def load(self, key: str, text: str) -> Optional[Dict[str, Any]]:
        """The document stored for exactly make_key()'s (key, text), or None (a bad file goes)."""
        return self._load(self.path(key), text)

    def load_facts(self, key: str, text: str) -> Dict[str, Any]:
        """The kernel facts stored for make_key() of a kernel identity (Tracer._kernel_facts), or {}."""
        return self._load(self.path(key, FACTS), text) or {}

    def store_facts(self, key: str, text: str, facts: Dict[str, Any]) -> None:
        self._store(self.path(key, FACTS), text, facts)
        self.evict(keep=key, ext=FACTS)

    def _load(self, path: str, text: str) -> Optional[Dict[str, Any]]:
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError:
            return None
        head, nl, body = raw.partition(b"\n")
        try:
            magic, crc, length = head.decode("ascii").split()
            ok = (magic == f"netbee-prepared-{FORMAT}" and int(length) == len(body)
                  and int(crc, 16) == zlib.crc32(body))
            doc = json.loads(body) if ok else None
        except (ValueError, UnicodeDecodeError):
            doc = None
        if not isinstance(doc, dict) or doc.get("parts") != text or not isinstance(doc.get("value"), dict):
            remove_quietly(path)
            return None
        try:
            os.utime(path)   # recently used: evicted last
        except OSError:
            pass
        return doc["value"]

    def store(self, key: str, text: str, value: Dict[str, Any]) -> List[str]:
        """Write value (JSON-able) for (key, text); returns the keys evicted to stay in bounds."""
        self._store(self.path(key), text, value)
        return self.evict(keep=key)

    def _store(self, path: str, text: str, value: Dict[str, Any]) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        body = json.dumps({"parts": text, "value": value}, separators=(",", ":")).encode()
        tmp = f"{path}.tmp{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(f"netbee-prepared-{FORMAT} {zlib.crc32(body):08x} {len(body)}\n".encode())
                f.write(body)
            os.rename(tmp, path)
        except BaseException:
            remove_quietly(tmp)
            raise

    def discard(self, key: str) -> None:
        remove_quietly(self.path(key))

    def keys(self, ext: str = ENTRY) -> List[str]:
        """Stored keys (of entries, or of kernel facts), least recently used first."""
        found = {}
        try:
            with os.scandir(self.directory) as it:
                for e in it:
                    key, dot, name_ext = e.name.partition(".")
                    if dot and name_ext == ext:
                        found[key] = e.stat().st_mtime
        except FileNotFoundError:
            pass
        return sorted(found, key=lambda k: (found[k], k))

    def evict(self, keep: str, ext: str = ENTRY) -> List[str]:
        """Drop the least recently used files of this kind beyond their bound (max_entries, or
        MAX_FACTS), and temporary files of dead runs."""
        for path in dead_temporaries(self.directory, ".tmp"):
            remove_quietly(path)
        limit = self.max_entries if ext == ENTRY else MAX_FACTS
        keys = [k for k in self.keys(ext) if k != keep]
        drop = keys[:max(0, len(keys) + 1 - limit)]
        for k in drop:
            remove_quietly(self.path(k, ext))
        return drop

    def clear(self) -> int:
        """Remove every entry and kernel facts file; returns how many entries there were."""
        for k in self.keys(FACTS):
            remove_quietly(self.path(k, FACTS))
        keys = self.keys()
        for k in keys:
            remove_quietly(self.path(k))
        return len(keys)
