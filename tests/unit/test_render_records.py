"""render_records: lines made straight from raw records equal the Event path's, and json.dumps'."""
from __future__ import annotations

import json
import random
import struct
import string

import pytest
from hypothesis import given, settings, strategies as st

from netbee import abi, output
from netbee.decode import decode_event
from netbee.loader.ringbuf import RecordBlock
from netbee.render_records import JsonRecords, records_renderer
from netbee.template_fn import compile_template
from tests.unit.test_output import KALLSYMS, FixedClock, _documented, res  # noqa: F401 - res is a fixture


def resolvers() -> output.Resolvers:
    """The resolvers of test_output's `res` fixture, made afresh for each hypothesis example."""
    import io

    from netbee.resolvers.drop_reasons import DropReasons
    from netbee.resolvers.ifnames import IfNames
    from netbee.resolvers.kallsyms import Kallsyms
    from netbee.resolvers.oui import OuiResolver
    return output.Resolvers(
        ifnames=IfNames(lister=lambda ns: {5: "veth-a", 6: "evil\x1b[2Jname"}), oui=OuiResolver(),
        drops=DropReasons(loader=lambda: {"SKB_DROP_REASON_NO_SOCKET": 2, "SKB_DROP_REASON_NETFILTER_DROP": 12}),
        kallsyms=Kallsyms(f=io.StringIO(KALLSYMS)))

u = st.integers
FIELDS = {
    "ts_ns": u(0, (1 << 64) - 1), "skb": u(0, (1 << 64) - 1), "location": u(0, (1 << 64) - 1),
    "netns": st.sampled_from([4026531999, 4026532000]), "ifindex": st.sampled_from([0, 5, 6, 99]),
    "pid": u(0, 1 << 22), "drop_reason": st.sampled_from([0, 2, 12, 77]), "seq": u(0, (1 << 32) - 1),
    "ack": u(0, (1 << 32) - 1), "hook": u(0, 30), "cpu": u(0, 3), "flags": u(0, 0x3FF),
    "ethertype": st.sampled_from([0x0800, 0x86DD, 0x0806]), "ip_len": st.sampled_from([0, 60, 1500, 65535]),
    "skb_len": u(0, 65535), "sport": u(0, 65535), "dport": u(0, 65535), "window": u(0, 65535),
    "payload_len": u(0, 2000), "udp_len": u(0, 2000), "icmp_id": u(0, 65535), "icmp_seq": u(0, 65535),
    "inner_sport": u(0, 65535), "inner_dport": u(0, 65535), "stack_depth": u(0, 3),
    "family": st.sampled_from([0, 4, 6, 9]), "ip_proto": st.sampled_from([1, 6, 17, 58, 132, 47]),
    "ttl": st.sampled_from([1, 63, 64, 255]), "tcp_flags": u(0, 255), "tcp_state": u(0, 14),
    "icmp_type": st.sampled_from([0, 3, 8, 11, 128, 129, 250]), "icmp_code": u(0, 17), "inner_proto": u(0, 255),
    "nf_hook": u(0, 7), "verdict": u(0, 5),
    "smac": st.sampled_from([bytes.fromhex("3c22fb000001"), bytes(6), bytes.fromhex("26070d7b7fe4")]),
    "dmac": st.binary(min_size=6, max_size=6),
    "saddr": st.sampled_from([bytes(range(16)), bytes([10, 201, 1, 1]) + bytes(12), bytes(16)]),
    "daddr": st.binary(min_size=16, max_size=16), "inner_saddr": st.binary(min_size=16, max_size=16),
    "inner_daddr": st.binary(min_size=16, max_size=16),
    "comm": st.sampled_from([b"ping\0", b"50%s{0}}\0", b"a\x1b]0;x\x07\0", "ünï".encode() + b"\xff\0",
                             b"x" * 16, b"tab\there\0"]).map(lambda b: b.ljust(16, b"\0")[:16]),
}
record = st.fixed_dictionaries(FIELDS).map(abi.EVENT.build)


def _block(recs):
    stride = (len(recs[0]) + 8 + 7) & ~7
    data = b"".join(struct.pack("=I4x", len(r)) + r + bytes(stride - 8 - len(r)) for r in recs)
    return RecordBlock(data, len(recs[0]), stride, len(recs))


@settings(max_examples=60, deadline=None)
@given(st.lists(record, min_size=1, max_size=40), st.randoms(use_true_random=False))
def test_json_lines_from_records_equal_the_event_path_and_json_dumps(recs, rnd):
    """Random records over the construct layout, repeated in a row so templates are reused: the
    raw path (a list, and a RecordBlock) gives the Event path's line, which is json.dumps'."""
    res = resolvers()
    recs = recs + [rnd.choice(recs) for _ in range(len(recs))]
    clock = FixedClock()
    plain = output.JsonRenderer(res, clock)
    want = [plain.render(decode_event(r)) for r in recs]
    assert want == [_documented(decode_event(r), res, clock) for r in recs]
    assert JsonRecords(output.JsonRenderer(res, clock)).render(recs) == want
    raw = JsonRecords(output.JsonRenderer(res, clock))
    assert raw.render(_block(recs)) == want
    assert raw.render(_block(recs[::-1])) == want[::-1]      # cached templates, another batch


def test_records_with_a_stack_take_the_event_path(res):  # noqa: F811
    clock = FixedClock()
    base = dict(abi.EVENT.parse(bytes(abi.EVENT_SIZE)))
    base.pop("_io", None)
    drop = abi.EVENT.build(dict(base, hook=15, flags=abi.F_DROP | abi.F_STACK, drop_reason=2, stack_depth=2))
    drop += struct.pack("=QQ", 0xFFFFFFFF81000010, 0xFFFFFFFFC0A01008)
    plain = abi.EVENT.build(dict(base, hook=3, ts_ns=5))
    recs = [plain, drop, plain, drop]
    lines = JsonRecords(output.JsonRenderer(res, clock)).render(recs)
    assert lines == [output.JsonRenderer(res, clock).render(decode_event(r)) for r in recs]
    assert json.loads(lines[1])["stack"] == ["sk_skb_reason_drop+0x10", "nft_do_chain+0x8 [nf_tables]"]
    stacked = [drop, drop[:-16] + struct.pack("=QQ", 0xFFFFFFFF81000011, 0x10)]
    assert JsonRecords(output.JsonRenderer(res, clock)).render(_block(stacked)) == \
        [output.JsonRenderer(res, clock).render(decode_event(r)) for r in stacked]


def test_short_record_is_a_value_error(res):  # noqa: F811
    with pytest.raises(ValueError):
        JsonRecords(output.JsonRenderer(res, FixedClock())).render([bytes(abi.EVENT_SIZE - 1)])


def test_renderer_choice(res):  # noqa: F811
    """Templates for netbee's two renderers; anything else renders decoded events."""
    from netbee.render_records import TableRecords

    class Plain:
        def render(self, ev):
            return ev.func

    clock = FixedClock()
    recs = [abi.EVENT.build(dict({n: 0 for n, _, _ in abi.field_layout(abi.EVENT)}, hook=3, smac=bytes(6),
                                 dmac=bytes(6), saddr=bytes(16), daddr=bytes(16), inner_saddr=bytes(16),
                                 inner_daddr=bytes(16), comm=b"x".ljust(16, b"\0")))]
    assert isinstance(records_renderer(output.JsonRenderer(res, clock)).__self__, JsonRecords)
    assert isinstance(records_renderer(output.TableRenderer(res, clock=clock)).__self__, TableRecords)
    assert records_renderer(Plain())(recs) == ["ip_rcv"]


@settings(max_examples=40, deadline=None)
@given(st.lists(record, min_size=1, max_size=30), st.randoms(use_true_random=False), st.booleans())
def test_table_lines_from_records_equal_the_event_path_and_the_reference(recs, rnd, color):
    """As for JSON: the table line from a raw record equals TableRenderer.render of its Event and
    the field-by-field reference construction, times crossing seconds included."""
    from netbee.render_records import TableRecords
    from tests.unit.test_output import _reference_table
    res = resolvers()
    recs = recs + [rnd.choice(recs) for _ in range(len(recs))]
    clock = FixedClock()
    plain = output.TableRenderer(res, color=color, clock=clock)
    want = [plain.render(decode_event(r)) for r in recs]
    assert want == [_reference_table(decode_event(r), res, color, clock) for r in recs]
    assert TableRecords(output.TableRenderer(res, color=color, clock=clock)).render(recs) == want
    raw = TableRecords(output.TableRenderer(res, color=color, clock=clock))
    assert raw.render(_block(recs)) == want
    assert raw.render(_block(recs[::-1])) == want[::-1]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(alphabet=string.printable + "ü{}'\"\\\x00\u2028", max_size=8).map(
                    lambda text: text.replace("{", "{{").replace("}", "}}")),
                st.sampled_from(["{0:.6f}", "{1:x}", "{2}", "{3}", "{4:06d}"])), max_size=12),
       st.floats(min_value=0, max_value=2e9), u(0, 1 << 64), u(-5, 10 ** 6))
def test_compiled_template_equals_str_format(parts, t, skb, n):
    template = "".join(parts)
    args = (t, skb, n, None, abs(n))
    assert compile_template(template, 5)(*args) == template.format(*args)


@pytest.mark.parametrize("bad", ["{5}", "{0!r}", "{x}", "{0.real}", "{0[1]}", "{0:{1}}", "{0:>10}"])
def test_compile_template_refuses_what_it_cannot_check(bad):
    with pytest.raises(ValueError):
        compile_template(bad, 5)


def test_interface_number_is_named_once_it_appears():
    """As for the Event path: the raw path reuses a line showing an interface number for about a
    second of event time, then looks the name up again."""
    import io

    from netbee.resolvers.drop_reasons import DropReasons
    from netbee.resolvers.ifnames import IfNames
    from netbee.resolvers.kallsyms import Kallsyms
    from netbee.resolvers.oui import OuiResolver
    now = [0.0]
    known = {5: "veth-a"}
    res = output.Resolvers(ifnames=IfNames(lister=lambda ns: dict(known), clock=lambda: now[0]),
                           oui=OuiResolver(), drops=DropReasons(loader=lambda: {}),
                           kallsyms=Kallsyms(f=io.StringIO("")))
    r = JsonRecords(output.JsonRenderer(res, FixedClock()))
    zero = {n: 0 for n, _, _ in abi.field_layout(abi.EVENT)}
    rec = lambda ts: abi.EVENT.build(dict(zero, ifindex=7, ts_ns=ts, smac=bytes(6), dmac=bytes(6),  # noqa: E731
                                          saddr=bytes(16), daddr=bytes(16), inner_saddr=bytes(16),
                                          inner_daddr=bytes(16), comm=bytes(16)))
    iface = lambda recs: [json.loads(x)["iface"] for x in r.render(recs)]  # noqa: E731
    assert iface([rec(1), rec(2)]) == ["7", "7"]
    known[7] = "veth-new"
    now[0] = 5.0
    assert iface([rec(3 << 30)]) == ["veth-new"]
