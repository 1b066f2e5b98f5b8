"""Tracer's read path (read_events, events, counters) over a stand-in ring buffer reader."""
from __future__ import annotations

import struct
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

    def read_block(self, timeout=0.0, limit=None):
        return self.read(timeout, True, limit)


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


def test_hook_counts_of_a_block_and_of_a_list_agree():
    """Per-hook counts from raw records: a RecordBlock's hook bytes counted in C, a list (or a
    block with a hook id above 255) record by record; names as decode_event gives them."""
    from netbee.decode import decode_event
    from netbee.loader.ringbuf import RecordBlock
    from netbee.tracer import hook_counts

    def block(recs):
        stride = (len(recs[0]) + 8 + 7) & ~7
        data = b"".join(struct.pack("=I4x", len(r)) + r + bytes(stride - 8 - len(r)) for r in recs)
        return RecordBlock(data, len(recs[0]), stride, len(recs))

    for hooks in ([3, 3, 15, 2, 3], [3, 300, 15, 0x1FF, 300]):
        recs = [raw_event(hook=h) for h in hooks]
        want = {}
        for ev in map(decode_event, recs):
            want[ev.func] = want.get(ev.func, 0) + 1
        assert hook_counts(recs) == want == hook_counts(block(recs))
    assert hook_counts(recs) == {"ip_rcv": 1, "hook#300": 2, "kfree_skb": 1, "hook#511": 1}
