"""MAC address -> vendor, from the packaged IEEE registry extract (scripts/gen_oui.py).

Longest prefix wins (MA-S 36 bits, then MA-M 28, then MA-L 24). The data is loaded on the first
lookup. Locally administered, multicast and broadcast addresses carry no vendor: they get a mark.
"""
from __future__ import annotations

import bisect
import io
import os
import zlib
from array import array
from typing import Dict, Optional

from netbee.loader.errors import UsageError

DEFAULT_DB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "oui.db")
BROADCAST = b"\xff" * 6


def load_db(data: bytes) -> Dict[int, "PrefixTable"]:
    """oui.db bytes (zlib text, or plain text) -> {prefix bits: PrefixTable}."""
    if data[:1] in (b"\x78",):
        data = zlib.decompress(data)
    tables: Dict[int, PrefixTable] = {24: PrefixTable(), 28: PrefixTable(), 36: PrefixTable()}
    # Line by line from the bytes: a list of all lines as str would triple the peak while loading.
    for line in io.BytesIO(data):
        prefix, sep, name = line.rstrip(b"\r\n").partition(b"\t")
        bits = len(prefix) * 4
        if not sep or bits not in tables:
            continue
        tables[bits].add(int(prefix, 16), name.decode("utf-8", "replace"))
    for t in tables.values():
        t.finish()
    return tables


class PrefixTable:
    """prefix value -> vendor name, packed: sorted prefixes in an array, names in one blob.

    The registry has ~46,000 prefixes; as a dict of ints and strs it held ~12 MiB for the whole
    run (loaded before tracing starts), packed ~1.5 MiB. A prefix listed twice keeps its last name."""

    __slots__ = ("keys", "offsets", "blob", "_in_order")

    def __init__(self) -> None:
        self.keys: "array[int]" = array("Q")
        self.offsets: "array[int]" = array("I", [0])   # name i is blob[offsets[i]:offsets[i + 1]]
        self.blob = bytearray()
        self._in_order = True

    def add(self, key: int, name: str) -> None:
        if self.keys and key <= self.keys[-1]:
            self._in_order = False
        self.keys.append(key)
        self.blob += name.encode()
        self.offsets.append(len(self.blob))

    def finish(self) -> None:
        """Sort by prefix if the file was not sorted (the generated one is)."""
        if self._in_order:
            return
        keys, offsets, blob = self.keys, self.offsets, self.blob
        last = {}
        for i, k in enumerate(keys):
            last[k] = i   # the last occurrence of a prefix wins, as in a dict
        self.__init__()   # type: ignore[misc]
        for k in sorted(last):
            i = last[k]
            self.add(k, blob[offsets[i]:offsets[i + 1]].decode())

    def __len__(self) -> int:
        return len(self.keys)

    def get(self, key: int) -> Optional[str]:
        keys = self.keys
        i = bisect.bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            return self.blob[self.offsets[i]:self.offsets[i + 1]].decode()
        return None


class OuiResolver:
    """vendor(mac) and describe(mac); mac is 6 bytes."""

    def __init__(self, path: Optional[str] = None) -> None:
        self.path = path or DEFAULT_DB
        self._tables: Optional[Dict[int, PrefixTable]] = None
        self._cache: Dict[bytes, Optional[str]] = {}

    def _load(self) -> Dict[int, PrefixTable]:
        if self._tables is None:
            try:
                with open(self.path, "rb") as f:
                    data = f.read()
                self._tables = load_db(data)
            except (OSError, zlib.error, ValueError) as e:
                raise UsageError(f"cannot read OUI database {self.path}: {e}") from None
        return self._tables

    def check(self) -> None:
        """Load now, so a bad --oui-db is reported before tracing starts."""
        self._load()

    def vendor(self, mac: bytes) -> Optional[str]:
        """The registered organization, or None (also for addresses that carry no OUI)."""
        mac = bytes(mac)
        if mac in self._cache:
            return self._cache[mac]
        name = None
        if len(mac) == 6 and not mac[0] & 0x03:
            value = int.from_bytes(mac, "big")
            tables = self._load()
            for bits in (36, 28, 24):
                name = tables[bits].get(value >> (48 - bits))
                if name is not None:
                    break
        if len(self._cache) < 4096:
            self._cache[mac] = name
        return name

    def describe(self, mac: bytes) -> Optional[str]:
        """Vendor, or a mark: "broadcast", "multicast", "locally administered"; None if unknown."""
        mac = bytes(mac)
        if not any(mac):
            return None  # loopback and tunnels carry an all-zero address: no vendor, no mark
        if mac == BROADCAST:
            return "broadcast"
        if mac[:1] and mac[0] & 0x01:
            return "multicast"
        if mac[:1] and mac[0] & 0x02:
            return "locally administered"
        return self.vendor(mac)


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in bytes(mac))
