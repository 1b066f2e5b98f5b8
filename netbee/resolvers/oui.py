"""MAC address -> vendor, from the packaged IEEE registry extract (scripts/gen_oui.py).

Longest prefix wins (MA-S 36 bits, then MA-M 28, then MA-L 24). The data is loaded on the first
lookup. Locally administered, multicast and broadcast addresses carry no vendor: they get a mark.
"""
from __future__ import annotations

import os
import zlib
from typing import Dict, Optional

from netbee.loader.errors import UsageError

DEFAULT_DB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "oui.db")
BROADCAST = b"\xff" * 6


def load_db(data: bytes) -> Dict[int, Dict[int, str]]:
    """oui.db bytes (zlib text, or plain text) -> {prefix bits: {prefix value: name}}."""
    if data[:1] in (b"\x78",):
        data = zlib.decompress(data)
    tables: Dict[int, Dict[int, str]] = {24: {}, 28: {}, 36: {}}
    for line in data.decode("utf-8", "replace").splitlines():
        prefix, sep, name = line.partition("\t")
        bits = len(prefix) * 4
        if not sep or bits not in tables:
            continue
        tables[bits][int(prefix, 16)] = name
    return tables


class OuiResolver:
    """vendor(mac) and describe(mac); mac is 6 bytes."""

    def __init__(self, path: Optional[str] = None) -> None:
        self.path = path or DEFAULT_DB
        self._tables: Optional[Dict[int, Dict[int, str]]] = None
        self._cache: Dict[bytes, Optional[str]] = {}

    def _load(self) -> Dict[int, Dict[int, str]]:
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
