"""btf.py on the BTF of Debian's 6.1 and 6.12 kernels (the QEMU targets), extracted from
their images by the harness (tests/vm/kernels.py; downloads with apt-get when not cached,
hence root). Every type decodes, the blob re-encodes byte for byte, and what NetBee looks
up is there."""
from __future__ import annotations

import time

import pytest

from netbee.loader.btf import Btf, BtfKind
from tests.vm import kernels

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module", params=["6.1", "6.12"])
def debian(request):
    raw = kernels.kernel_btf(request.param)
    return request.param, raw


def test_debian_btf_whole(debian):
    series, raw = debian
    t0 = time.process_time()
    btf = Btf.parse(raw)
    (skb,) = btf.find("sk_buff", BtfKind.STRUCT)
    assert time.process_time() - t0 <= 0.15
    assert len(btf) > 50000
    kinds = {btf.type(i).kind for i in range(len(btf))}          # every type decodes
    assert {BtfKind.STRUCT, BtfKind.FUNC, BtfKind.ENUM, BtfKind.DATASEC} <= kinds
    assert btf.to_bytes() == raw
    assert {"len", "head", "data"} <= {m.name for m in btf.type(skb).members}
    reasons = btf.enum_values("skb_drop_reason")
    assert "SKB_DROP_REASON_NETFILTER_DROP" in reasons and "SKB_DROP_REASON_NO_SOCKET" in reasons
    assert btf.find("nf_hook_slow", BtfKind.FUNC) and btf.find("ip_rcv", BtfKind.FUNC)
    # the drop function NetBee hooks differs by version: the kernel tells which one it has
    assert btf.find("kfree_skb_reason", BtfKind.FUNC) or btf.find("sk_skb_reason_drop", BtfKind.FUNC)
