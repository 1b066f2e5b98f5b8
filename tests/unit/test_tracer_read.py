"""Tracer's read path (read_events, events, counters) over a stand-in ring buffer reader."""
from __future__ import annotations

import types

from netbee import abi
from netbee.tracer import Tracer
from tests.unit.test_decode import raw_event


class FakeReader:
    def __init__(self, records):
        self.records = list(records)
        self.calls = []
        self.cursor = types.SimpleNamespace(available=lambda: bool(self.records))

    def read(self, timeout=0.0, copy=True, limit=None):
        self.calls.append((timeout, limit))
        n = len(self.records) if limit is None else limit
        batch, self.records = self.records[:n], self.records[n:]
        return batch


def test_read_events_decodes_a_batch_and_counts_per_hook():
    t = Tracer()
    recs = [raw_event(hook=abi.NbHook.IP_RCV)] * 3 + [raw_event(hook=abi.NbHook.KFREE_SKB)] * 2
    t._reader = FakeReader(recs)
    assert t.pending()
    first = t.read_events(timeout=0.5, limit=4)
    assert [e.func for e in first] == ["ip_rcv"] * 3 + ["kfree_skb"] and t.pending()
    assert [e.func for e in t.events(timeout=0)] == ["kfree_skb"]
    assert not t.pending() and t.read_events(timeout=0) == []
    assert t._reader.calls[0] == (0.5, 4)
    c = t.counters()
    assert c.received == 5 and c.per_hook == {"ip_rcv": 3, "kfree_skb": 2}
