"""The relocated code cache with the kprobe and fentry backends (QEMU guests): their programs carry
attach targets chosen by the plan (kprobe symbols, fentry BTF ids) that an entry must keep."""
from __future__ import annotations

import pytest

from netbee import prepcache
from tests.kernel.test_prepcache import PORT_A, PORT_B, _drain, _opts, _send

pytestmark = pytest.mark.kernel


@pytest.mark.parametrize("backend", [
    pytest.param("kprobe", marks=pytest.mark.requires_kernel("kprobe")),
    pytest.param("fentry", marks=pytest.mark.requires_kernel("fentry")),
])
def test_a_new_filter_reuses_the_relocated_code(tmp_path, backend):
    cache = prepcache.PreparedCache(str(tmp_path / "prepared"))
    from netbee.tracer import Tracer

    opts = _opts(cache, PORT_A)
    opts.backend = backend
    with Tracer(opts) as tr:
        assert tr.start().backend == backend
        assert tr.prepared_status == "miss, stored"
    opts = _opts(cache, PORT_B)
    opts.backend = backend
    with Tracer(opts) as tr:
        rep = tr.start()
        assert tr.prepared_status == "hit" and rep.backend == backend
        _send(PORT_A, 2)
        _send(PORT_B, 1)
        events = _drain(tr, settle=2.0)
    assert events and {e.dport for e in events} == {PORT_B}
    assert len([e for e in events if e.func == "netif_receive_skb"]) == 1
