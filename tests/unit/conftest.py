"""Fixtures shared by the unit tests."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from netbee.loader.btf import KERNEL_BTF_PATH


@pytest.fixture(scope="module")
def vmlinux_copy(tmp_path_factory) -> Path:
    """A copy of the running kernel's BTF: its own load_kernel cache key, so a load of it really
    reads and parses."""
    if not Path(KERNEL_BTF_PATH).exists():
        pytest.fail(f"{KERNEL_BTF_PATH} missing: these tests need the running kernel's BTF")
    dst = tmp_path_factory.mktemp("btf") / "vmlinux"
    shutil.copyfile(KERNEL_BTF_PATH, dst)
    return dst
