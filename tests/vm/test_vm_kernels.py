"""Host side of the QEMU runs: one boot per Debian kernel, the requires_kernel tests inside it."""
from __future__ import annotations

from typing import Callable

import pytest

from tests.vm import kernels, run

pytestmark = pytest.mark.vm


@pytest.mark.parametrize("series", sorted(kernels.SERIES))
def test_requires_kernel_suite_in_guest(series: str, vm_report: Callable[..., None]) -> None:
    guest = run.boot(series)
    tests = guest.tests()
    for row in guest.counts():
        vm_report(f"QEMU {row['kernel']}", row["backend"], row["run"], row["passed"])
    print(f"\n{series} ({guest.release}): guest exit {guest.exitstatus}, {guest.seconds:.0f}s, junit {guest.junit}")
    for row in guest.counts():
        print(f"  backend {row['backend']}: {row['passed']}/{row['run']} passed")
    failed = [t["nodeid"] for t in tests if t["outcome"] != "passed"]
    assert guest.exitstatus is not None, f"guest produced no exit status:\n{guest.console[-3000:]}"
    assert tests, f"no test ran inside the {series} guest:\n{guest.pytest_log[-3000:]}"
    assert guest.junit.get("tests", 0) == len(tests)
    assert not failed and guest.exitstatus == 0, \
        f"{len(failed)} failed in {series}: {failed}\n{guest.pytest_log[-6000:]}"


@pytest.mark.parametrize("series", sorted(kernels.SERIES))
def test_kernel_btf_matches_running_guest(series: str) -> None:
    # The boot above saved the guest's /sys/kernel/btf/vmlinux next to the kernel.
    guest_btf = kernels.kernel_dir(series) / "guest-vmlinux.btf"
    assert guest_btf.exists(), "the guest boot did not bring back /sys/kernel/btf/vmlinux"
    assert kernels.kernel_btf(series) == guest_btf.read_bytes()
