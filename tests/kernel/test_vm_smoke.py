"""Proves the QEMU pipeline end to end: kprobes exist in the guest and really count packets."""
from __future__ import annotations

import ctypes
import os
import struct

import pytest

from netbee.loader import syscall
from tests import kernel_features, netlab

pytestmark = [pytest.mark.kernel]

KPROBE_TYPE = "/sys/bus/event_source/devices/kprobe/type"


def _kprobe_counter(func: str, cpu: int) -> syscall.Fd:
    attr = syscall.PerfEventAttr()
    attr.type = int(open(KPROBE_TYPE).read())
    name = ctypes.create_string_buffer(func.encode())
    attr.config1 = ctypes.addressof(name)  # kprobe PMU: function name pointer, config2 = offset
    attr.config2 = 0
    return syscall.perf_event_open(attr, pid=-1, cpu=cpu, what=f"kprobe {func}")


@pytest.mark.requires_kernel("kprobe")
def test_kprobe_counts_ip_rcv(two_hosts: netlab.TwoHosts) -> None:
    fds = [_kprobe_counter("ip_rcv", cpu) for cpu in range(os.cpu_count() or 1)]
    try:
        netlab.ping(two_hosts.client, two_hosts.server_ip, count=3, interval=0.05)
        hits = sum(struct.unpack("<Q", os.read(fd.fd, 8))[0] for fd in fds)
    finally:
        for fd in fds:
            fd.close()
    # Three echo requests reach the server and three replies the client, each through ip_rcv.
    assert hits >= 6, f"kprobe on ip_rcv counted {hits} packets, expected >= 6"


@pytest.mark.requires_kernel("kprobe", "fentry")
def test_guest_feature_probes_agree_with_kernel() -> None:
    # Debian 6.1 and 6.12 both have fentry and kprobes; kprobe.multi needs FPROBE, on in 6.12 only.
    release = os.uname().release
    multi, why = kernel_features.check("kprobe_multi")
    if release.startswith("6.12."):
        assert multi, why
    elif release.startswith("6.1."):
        assert not multi, f"6.1 was not expected to have kprobe.multi: {why}"
    assert kernel_features.check("tracefs_kprobe")[0]
