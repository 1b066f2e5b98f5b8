"""Pure checks of netlab naming and validation (no root needed)."""
from __future__ import annotations

import os

import pytest

from tests import netlab


def test_unique_names_carry_prefix_pid_and_differ() -> None:
    a, b = netlab.unique_name("client"), netlab.unique_name("client")
    assert a != b
    assert a.startswith(f"{netlab.PREFIX}{os.getpid()}-") and a.endswith("-client")


def test_networks_outside_test_range_refused() -> None:
    with pytest.raises(ValueError):
        netlab.make_two_hosts(net=10)
    with pytest.raises(ValueError):
        netlab.make_routed_hosts(net=254)


def test_bad_namespace_name_refused() -> None:
    with pytest.raises(ValueError):
        netlab.Netns("../etc")
