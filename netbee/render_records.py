"""Raw ring buffer records -> output lines, without an Event per record: the hot path of `netbee`.

Each record is unpacked in one C call by a split derived from abi.EVENT (netbee/record_split.py):
the per-packet numbers come out as values, the fields that repeat in a trace as a few byte runs
whose tuple keys a cache of line functions. A line function is made once per key from the
renderer's own template of the decoded record (decode_event -> Event -> renderer.template), so a
raw line is by construction what the Event path prints; tests/unit/test_render_records.py checks
that on random records, bench.userspace_replay on real ones. Records the templates cannot serve
(a kernel stack follows the record) go through the Event path.
"""
from __future__ import annotations

import struct
import time
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple, Union

from netbee import abi
from netbee.decode import decode_event
from netbee.loader.ringbuf import HDR_SIZE
from netbee.output import CACHE_MAX, JSON_ARGS, TABLE_ARGS, JsonRenderer, TableRenderer, _NumericIfaces
from netbee.record_split import KEY, RecordSplit, split_record
from netbee.template_fn import compile_template

# What a line shows of each record, by field (see the renderers' template()): the per-packet
# slots, the fields its template depends on, and the rest, which it does not show (a stack is
# rendered through the Event path).
JSON_SLOTS = ("ts_ns", "skb", "seq", "ack", "ip_len", "skb_len", "sport", "dport")
JSON_KEYS = ("netns", "ifindex", "pid", "drop_reason", "hook", "cpu", "flags", "family", "ip_proto",
             "ttl", "tcp_flags", "tcp_state", "icmp_type", "icmp_code", "nf_hook", "verdict", "smac",
             "dmac", "saddr", "daddr", "comm")
JSON_UNUSED = ("location", "ethertype", "window", "payload_len", "udp_len", "icmp_id", "icmp_seq",
               "inner_sport", "inner_dport", "stack_depth", "inner_proto", "inner_saddr", "inner_daddr")
JSON_SPLIT = split_record(abi.EVENT, JSON_SLOTS, JSON_KEYS)
# The loops below unpack by position: the derived order must be this one.
assert JSON_SPLIT.items == ("ts_ns", "skb", KEY, "seq", "ack", KEY, "ip_len", "skb_len", "sport", "dport",
                            KEY), JSON_SPLIT.items

TABLE_SLOTS = ("ts_ns", "seq", "ack", "window", "payload_len", "udp_len", "icmp_id", "icmp_seq")
TABLE_UNUSED = ("skb", "ip_len", "skb_len", "stack_depth")
TABLE_KEYS = tuple(name for name, _, _ in abi.field_layout(abi.EVENT)
                   if name not in TABLE_SLOTS and name not in TABLE_UNUSED)
# Not bridged: the lengths between ethertype and the ports change with every packet.
TABLE_SPLIT = split_record(abi.EVENT, TABLE_SLOTS, TABLE_KEYS, bridge=False)
assert TABLE_SPLIT.items == ("ts_ns", KEY, "seq", "ack", KEY, KEY, "window", "payload_len", "udp_len", "icmp_id",
                             "icmp_seq", KEY, KEY), TABLE_SPLIT.items

LineFn = Callable[..., str]
_EVENT_PATH = False  # cached in place of a line function: render this kind of record through an Event


class _RecordLines:
    """The cache of line functions by raw key, shared by both formats."""

    split: RecordSplit
    nargs: int

    def __init__(self, renderer: Any) -> None:
        self.renderer = renderer
        self._lines: Dict[Tuple[bytes, ...], Union[LineFn, bool]] = {}
        self._numeric = _NumericIfaces()
        self._walks: Dict[int, struct.Struct] = {}

    def _compile(self, template: str) -> LineFn:
        return compile_template(template, self.nargs)

    def _line_fn(self, buf: bytes, key: Tuple[bytes, ...], ts_ns: int) -> Union[LineFn, bool]:
        ev = decode_event(buf)
        line: Union[LineFn, bool] = _EVENT_PATH
        if ev.stack is None:
            template, stable = self.renderer.template(ev)
            line = self._compile(template)
            if not stable:
                self._numeric.add(key, ts_ns)
        if len(self._lines) >= CACHE_MAX:
            self._lines.clear()
        self._lines[key] = line
        return line

    def _rows(self, records: Sequence[bytes]) -> Iterator[tuple]:
        """The split of every record, in C: struct.iter_unpack over a RecordBlock. Interface
        numbers' lines are retried once per batch (within ~1 s of event time)."""
        if self._numeric.keys:
            self._numeric.expire(self._lines, self.split.struct.unpack_from(records[0])[0])
        stride = getattr(records, "stride", None)
        if stride is None or records.length < abi.EVENT_SIZE:   # type: ignore[attr-defined]
            return map(self.split.struct.unpack_from, records)
        walk = self._walks.get(stride)
        if walk is None:    # header, the record's fields, then what follows it (a stack) and padding
            fmt = self.split.struct.format
            walk = self._walks[stride] = struct.Struct(
                f"={HDR_SIZE}x{fmt[1:]}{stride - HDR_SIZE - abi.EVENT_SIZE}x")
        return walk.iter_unpack(records.data)    # type: ignore[attr-defined]


class JsonRecords(_RecordLines):
    """JSON lines of raw records, from the line templates of a JsonRenderer."""

    split = JSON_SPLIT
    nargs = len(JSON_ARGS) - 1      # every argument but the stack

    def render(self, records: Sequence[bytes]) -> List[str]:
        """One line per record, in order (a list of bytes, or a RecordBlock); ValueError for a
        record shorter than struct nb_event."""
        out: List[str] = []
        if not records:
            return out
        append = out.append
        get = self._lines.get
        offset = self.renderer.clock.offset
        try:
            for i, (ts_ns, skb, k1, seq, ack, k2, ip_len, skb_len, sport, dport, k3) in enumerate(self._rows(records)):
                key = (k1, k2, k3)
                line = get(key)
                if line is None:
                    line = self._line_fn(records[i], key, ts_ns)
                if line:
                    append(line(ts_ns / 1e9 + offset, skb, sport, dport, ip_len or skb_len, skb_len, seq, ack))
                else:
                    append(self.renderer.render(decode_event(records[i])))
        except struct.error:
            raise ValueError(f"event record shorter than {abi.EVENT_SIZE} bytes") from None
        return out


class TableRecords(_RecordLines):
    """Table lines of raw records, from the line templates of a TableRenderer."""

    split = TABLE_SPLIT
    nargs = len(TABLE_ARGS)

    def __init__(self, renderer: TableRenderer) -> None:
        super().__init__(renderer)
        self._sec = -1
        self._hms = ""

    def render(self, records: Sequence[bytes]) -> List[str]:
        """One line per record (lines of a stack included), in order; ValueError for a record
        shorter than struct nb_event."""
        out: List[str] = []
        if not records:
            return out
        append = out.append
        get = self._lines.get
        offset = self.renderer.clock.offset
        last, hms = self._sec, self._hms
        try:
            for i, (ts_ns, k1, seq, ack, k2, k3, window, payload_len, udp_len, icmp_id, icmp_seq, k4,
                    k5) in enumerate(self._rows(records)):
                key = (k1, k2, k3, k4, k5)
                line = get(key)
                if line is None:
                    line = self._line_fn(records[i], key, ts_ns)
                if line:
                    t = ts_ns / 1e9 + offset
                    sec = int(t)
                    if sec != last:
                        hms = time.strftime("%H:%M:%S", time.localtime(t))
                        last = sec
                    append(line("%s.%06d" % (hms, int(t * 1e6) % 1000000), seq, ack, window, payload_len,
                                udp_len - 8 if udp_len > 8 else 0, icmp_id, icmp_seq))
                else:
                    append(self.renderer.render(decode_event(records[i])))
        except struct.error:
            raise ValueError(f"event record shorter than {abi.EVENT_SIZE} bytes") from None
        finally:
            self._sec, self._hms = last, hms
        return out


def records_renderer(renderer: Any) -> Callable[[Sequence[bytes]], List[str]]:
    """The function that turns a batch of raw records into lines for this renderer: from its
    templates for netbee's two renderers, through decoded Events for any other."""
    if isinstance(renderer, JsonRenderer):
        return JsonRecords(renderer).render
    if isinstance(renderer, TableRenderer):
        return TableRecords(renderer).render
    render = renderer.render
    return lambda records: list(map(render, map(decode_event, records)))
