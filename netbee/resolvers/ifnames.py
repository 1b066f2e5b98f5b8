"""ifindex -> interface name, per network namespace.

The same index means different devices in different namespaces, so names are cached per netns
inode. An unknown index triggers a refresh (interfaces come and go), rate-limited so a stream of
events from a vanished device does not re-list the namespace every time; failing that, the number.
Names are listed with if_nameindex(3) on a socket of the target namespace (entered with setns via
netbee.netns): /sys/class/net would show the namespace sysfs was mounted in, not the entered one.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Optional

Lister = Callable[[int], Optional[Dict[int, str]]]
REFRESH_INTERVAL = 1.0
MAX_NAMESPACES = 1024


def list_current() -> Dict[int, str]:
    import socket   # (not at import: it is ~3 ms of every start, and names are looked up later)

    return {idx: name for idx, name in socket.if_nameindex()}


def list_netns(inode: int) -> Optional[Dict[int, str]]:
    """Interfaces of the namespace with this inode, or None when we cannot find or enter it."""
    from netbee import netns

    cur = netns.current()
    if inode in (0, cur.inode):
        return list_current()
    for ns in netns.resolve_all():
        if ns.inode == inode:
            try:
                with netns.entered(ns):
                    return list_current()
            except Exception:
                return None
    return None


class IfNames:
    def __init__(self, lister: Lister = list_netns, clock: Callable[[], float] = time.monotonic,
                 interval: float = REFRESH_INTERVAL) -> None:
        self._lister = lister
        self._clock = clock
        self._interval = interval
        self._cache: Dict[int, Dict[int, str]] = {}
        self._stamp: Dict[int, float] = {}

    def _refresh(self, netns: int) -> None:
        now = self._clock()
        last = self._stamp.get(netns)
        if last is not None and now - last < self._interval:
            return
        if len(self._stamp) >= MAX_NAMESPACES:
            self._stamp.clear()   # namespaces come and go: forget them all rather than grow
            self._cache.clear()
        self._stamp[netns] = now
        found = self._lister(netns)
        if found is not None:
            self._cache[netns] = found

    def name(self, netns: int, ifindex: int) -> str:
        if not ifindex:
            return "-"
        names = self._cache.get(netns)
        if names is None or ifindex not in names:
            self._refresh(netns)
            names = self._cache.get(netns, {})
        return names.get(ifindex, str(ifindex))
