"""output.py: table and JSON renderers on synthetic events (no kernel)."""
from __future__ import annotations

import io
import ipaddress
import json
import types

import pytest

from netbee import output
from netbee.resolvers.drop_reasons import DropReasons
from netbee.resolvers.ifnames import IfNames
from netbee.resolvers.kallsyms import Kallsyms
from netbee.resolvers.oui import OuiResolver

FIELDS = dict(ts_ns=1_000_000_000, skb=0xFFFF888012345678, hook=3, func="ip_rcv", cpu=1, pid=42,
              comm="ping", netns=4026531999, ifindex=5, family=4, proto=1,
              saddr=ipaddress.ip_address("10.201.1.1"), daddr=ipaddress.ip_address("10.201.1.2"),
              sport=None, dport=None, ttl=64, ip_len=84, skb_len=84,
              smac=bytes.fromhex("3c22fb000001"), dmac=bytes.fromhex("021122334455"),
              ethertype=0x0800, tcp_flags=None, tcp_state=None, seq=None, ack=None, window=None,
              payload_len=None, udp_len=None, icmp_type=8, icmp_code=0, icmp_id=7, icmp_seq=1,
              inner=None, nf_hook=None, verdict=None, drop_reason=None, location=None, stack=None,
              flags=0)


def event(**kw):
    """A stand-in with exactly the fields of decode.Event (contracts.txt)."""
    try:
        from netbee.decode import Event
    except ImportError:
        Event = None
    values = dict(FIELDS, **kw)
    if Event is not None:
        return Event(**values)
    return types.SimpleNamespace(**values)


KALLSYMS = "ffffffff81000000 T sk_skb_reason_drop\nffffffffc0a01000 t nft_do_chain\t[nf_tables]\n"


@pytest.fixture
def res():
    return output.Resolvers(
        ifnames=IfNames(lister=lambda ns: {5: "veth-a", 6: "evil\x1b[2Jname"}),
        oui=OuiResolver(),
        drops=DropReasons(loader=lambda: {"SKB_DROP_REASON_NO_SOCKET": 2,
                                          "SKB_DROP_REASON_NETFILTER_DROP": 12}),
        kallsyms=Kallsyms(f=io.StringIO(KALLSYMS)))


class FixedClock(output.Clock):
    def __init__(self):
        self.offset = 1_700_000_000.0


def test_json_has_exactly_the_documented_keys(res):
    r = output.JsonRenderer(res, FixedClock())
    obj = json.loads(r.render(event()))
    assert tuple(obj) == output.JSON_KEYS
    assert obj["time"] == pytest.approx(1_700_000_001.0)
    assert obj["func"] == "ip_rcv" and obj["iface"] == "veth-a" and obj["ifindex"] == 5
    assert obj["proto"] == "icmp" and obj["saddr"] == "10.201.1.1" and obj["daddr"] == "10.201.1.2"
    assert obj["sport"] is None and obj["dport"] is None and obj["ttl"] == 64 and obj["len"] == 84
    assert obj["smac"] == "3c:22:fb:00:00:01" and obj["smac_vendor"] == "Apple, Inc."
    assert obj["dmac_vendor"] == "locally administered"
    assert obj["icmp_type"] == "echo request" and obj["icmp_code"] is None
    assert obj["tcp_flags"] is None and obj["seq"] is None and obj["stack"] is None
    assert obj["skb"] == "0xffff888012345678" and obj["pid"] == 42 and obj["comm"] == "ping"
    assert obj["nf_hook"] is None and obj["verdict"] is None and obj["drop_reason"] is None


def test_json_tcp_drop_stack_nf(res):
    r = output.JsonRenderer(res, FixedClock())
    ev = event(proto=6, sport=40000, dport=80, tcp_flags=0x12, tcp_state=2, seq=1, ack=2,
               window=100, payload_len=0, icmp_type=None, icmp_code=None, icmp_id=None,
               icmp_seq=None, hook=15, func="kfree_skb", drop_reason=12,
               location=0xFFFFFFFFC0A0103A, stack=[0xFFFFFFFF81000010, 0xFFFFFFFFC0A01004, 0x10],
               nf_hook=1, verdict=0, smac=None, dmac=None, ifindex=0)
    obj = json.loads(r.render(ev))
    assert tuple(obj) == output.JSON_KEYS
    assert obj["tcp_flags"] == "S." and obj["tcp_state"] == "SYN_SENT"
    assert obj["seq"] == 1 and obj["ack"] == 2 and obj["sport"] == 40000 and obj["dport"] == 80
    assert obj["drop_reason"] == "NETFILTER_DROP"
    assert obj["stack"] == ["sk_skb_reason_drop+0x10", "nft_do_chain+0x4 [nf_tables]", "0x10"]
    assert obj["nf_hook"] == "LOCAL_IN" and obj["verdict"] == "DROP"
    assert obj["iface"] is None and obj["smac"] is None and obj["smac_vendor"] is None
    assert obj["icmp_type"] is None


def test_json_ipv6_icmp6_unreachable_and_unknown_reason(res):
    r = output.JsonRenderer(res, FixedClock())
    ev = event(family=6, proto=58, saddr=ipaddress.ip_address("fd00:201::1"),
               daddr=ipaddress.ip_address("fd00:201::2"), icmp_type=1, icmp_code=4,
               drop_reason=999, hook=15)
    obj = json.loads(r.render(ev))
    assert obj["proto"] == "icmp6" and obj["saddr"] == "fd00:201::1"
    assert obj["icmp_type"] == "destination unreachable" and obj["icmp_code"] == "port unreachable"
    assert obj["drop_reason"] == "999"


def test_control_characters_escaped_in_both_renderers(res):
    ev = event(comm="a\x1b]0;pwn\x07b", ifindex=6)
    line = output.JsonRenderer(res, FixedClock()).render(ev)
    obj = json.loads(line)
    assert obj["comm"] == "a\\x1b]0;pwn\\x07b" and obj["iface"] == "evil\\x1b[2Jname"
    table = output.TableRenderer(res, color=False, clock=FixedClock()).render(ev)
    assert "\x1b" not in table and "\x07" not in table
    assert "a\\x1b]0;pwn\\x07b" in table and "evil\\x1b[2Jname" in table
    assert output.escape("ok") == "ok" and output.escape("\x9b") == "\\x9b"


def test_table_line_contents(res):
    t = output.TableRenderer(res, color=False, clock=FixedClock())
    line = t.render(event())
    assert "veth-a" in line and "ip_rcv" in line and "icmp" in line
    assert "10.201.1.1 > 10.201.1.2" in line and "echo request id 7 seq 1" in line
    assert "3c:22:fb:00:00:01 (Apple, Inc.) > 02:11:22:33:44:55 (locally administered)" in line
    assert "pid 42 (ping)" in line
    assert "\x1b" not in line
    tcp = t.render(event(proto=6, sport=40000, dport=80, tcp_flags=0x11, seq=5, ack=6, window=9,
                         payload_len=0, tcp_state=1, icmp_type=None,
                         family=6, saddr=ipaddress.ip_address("fd00::1"),
                         daddr=ipaddress.ip_address("fd00::2")))
    assert "[fd00::1]:40000 > [fd00::2]:80" in tcp and "[F.] seq 5 ack 6 win 9 len 0" in tcp
    assert "state ESTABLISHED" in tcp
    udp = t.render(event(proto=17, sport=5, dport=53, udp_len=40, icmp_type=None))
    assert "10.201.1.1:5 > 10.201.1.2:53" in udp and "length 32" in udp
    unreach = t.render(event(icmp_type=3, icmp_code=3, inner=types.SimpleNamespace(
        proto=17, saddr=ipaddress.ip_address("10.201.1.2"),
        daddr=ipaddress.ip_address("10.201.1.1"), sport=999, dport=5000)))
    assert "destination unreachable (port unreachable) for udp 10.201.1.2:999 > 10.201.1.1:5000" in unreach
    ttl = t.render(event(icmp_type=11, icmp_code=0))
    assert "time exceeded (ttl exceeded in transit)" in ttl


def test_table_columns_align(res):
    t = output.TableRenderer(res, color=False, clock=FixedClock())
    a = t.render(event())
    b = t.render(event(func="__dev_queue_xmit", proto=17, sport=1, dport=2, udp_len=8,
                       icmp_type=None))
    head = t.header()
    for col in ("IFACE", "HOOK", "PROTO", "FLOW", "DETAILS"):
        pos = head.index(col)
        assert a[pos - 1] == " " and b[pos - 1] == " " and a[pos] != " " and b[pos] != " ", col


def test_table_drop_with_stack_and_colour(res):
    t = output.TableRenderer(res, color=True, clock=FixedClock())
    out = t.render(event(hook=15, func="kfree_skb", drop_reason=2, location=0xFFFFFFFF81000004,
                         stack=[0xFFFFFFFF81000004, 0xFFFFFFFFC0A01010]))
    lines = out.split("\n")
    assert "DROP NO_SOCKET at sk_skb_reason_drop+0x4" in lines[0] and output.RED in lines[0]
    assert lines[1].endswith("#0  sk_skb_reason_drop+0x4" + output.RESET)
    assert "nft_do_chain+0x10 [nf_tables]" in lines[2]
    nf = t.render(event(hook=14, func="nf:LOCAL_IN", nf_hook=1, verdict=1))
    assert f"nf LOCAL_IN {output.GREEN}ACCEPT{output.RESET}" in nf


def test_use_color():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    assert output.use_color(Tty(), {}) is True
    assert output.use_color(Tty(), {"NO_COLOR": ""}) is False
    assert output.use_color(io.StringIO(), {}) is False


def test_non_ip_event(res):
    ev = event(family=0, proto=None, saddr=None, daddr=None, ttl=None, ip_len=None, skb_len=60,
               ethertype=0x0806, icmp_type=None, icmp_code=None)
    obj = json.loads(output.JsonRenderer(res, FixedClock()).render(ev))
    assert obj["proto"] is None and obj["saddr"] is None and obj["len"] == 60
    line = output.TableRenderer(res, clock=FixedClock()).render(ev)
    assert "ethertype 0x0806" in line


def test_decoded_records_render(res):
    """Real decode_event output (records built with abi.EVENT) through both renderers."""
    import importlib.util
    import os
    from netbee.decode import decode_event
    path = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "bench_output.py")
    spec = importlib.util.spec_from_file_location("bench_output", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    j = output.JsonRenderer(res, FixedClock())
    t = output.TableRenderer(res, clock=FixedClock())
    objs = [json.loads(j.render(decode_event(r))) for r in bench.samples()]
    assert [o["proto"] for o in objs] == ["tcp", "udp", "icmp", "udp"]
    assert objs[0]["func"] == "netif_receive_skb" and objs[0]["tcp_flags"] == "."
    assert objs[0]["saddr"] == "10.201.1.1" and objs[0]["sport"] == 40000
    assert objs[2]["icmp_type"] == "echo request" and objs[3]["drop_reason"] == "NO_SOCKET"
    assert all(tuple(o) == output.JSON_KEYS for o in objs)
    assert "DROP NO_SOCKET at sk_skb_reason_drop+0x10" in t.render(decode_event(bench.samples()[3]))


# ----------------------------------------------------------------------------- equivalence

def _random_event(rng):
    """Any combination of present/absent fields the renderers must handle."""
    family = rng.choice((0, 4, 6))
    proto = None if family == 0 else rng.choice((1, 6, 17, 58, 132, 47, 200))
    if family == 4:
        saddr = ipaddress.IPv4Address(rng.getrandbits(32))
        daddr = ipaddress.IPv4Address(rng.choice((0x0AC90102, rng.getrandbits(32))))
    elif family == 6:
        saddr = ipaddress.IPv6Address(rng.getrandbits(128))
        daddr = ipaddress.IPv6Address(rng.choice((1, rng.getrandbits(128))))
    else:
        saddr = daddr = None
    opt = lambda v: v if rng.random() < 0.6 else None  # noqa: E731
    has_mac = rng.random() < 0.7
    return event(
        ts_ns=rng.getrandbits(60), skb=rng.getrandbits(64), hook=rng.randrange(26),
        func=rng.choice(("ip_rcv", "kfree_skb", "f%s", "nf:LOCAL_IN", "hook#99", 'q"uote\\')),
        cpu=rng.randrange(4), pid=rng.randrange(1 << 22),
        comm=rng.choice(("ping", "", "50%s%d%%", "a\x1b]0;x\x07", "ünï\u2028", "tab\there", "x" * 15)),
        netns=rng.choice((4026531999, 4026532000)), ifindex=rng.choice((0, 5, 6, 99)),
        family=family, proto=proto, saddr=saddr, daddr=daddr,
        sport=opt(rng.randrange(65536)), dport=opt(rng.randrange(65536)), ttl=opt(rng.randrange(256)),
        ip_len=rng.choice((None, 0, rng.randrange(65536))), skb_len=rng.randrange(65536),
        smac=bytes(rng.getrandbits(8) for _ in range(6)) if has_mac else None,
        dmac=rng.choice((bytes.fromhex("3c22fb000001"), bytes(6))) if has_mac else None,
        ethertype=rng.randrange(65536), tcp_flags=opt(rng.randrange(256)), tcp_state=opt(rng.randrange(14)),
        seq=opt(rng.getrandbits(32)), ack=opt(rng.getrandbits(32)), window=opt(rng.randrange(65536)),
        payload_len=opt(rng.randrange(2000)), udp_len=opt(rng.randrange(2000)),
        icmp_type=opt(rng.choice((0, 3, 8, 11, 1, 128, 129, 250))), icmp_code=opt(rng.randrange(17)),
        icmp_id=opt(rng.randrange(65536)), icmp_seq=opt(rng.randrange(65536)), inner=None,
        nf_hook=opt(rng.randrange(7)), verdict=opt(rng.randrange(6)), drop_reason=opt(rng.choice((2, 12, 77))),
        location=opt(0xFFFFFFFF81000010), flags=rng.getrandbits(16),
        stack=rng.choice((None, None, [], [0xFFFFFFFF81000010, 0x10])))


def _documented(ev, res, clock):
    """The JSON object as the module docstring documents it, built the plain way."""
    from netbee.resolvers import names
    proto = ev.proto
    icmp = (names.icmp(ev.family, ev.icmp_type, ev.icmp_code or 0)
            if proto in (1, 58) and ev.icmp_type is not None else (None, None))
    mac = lambda m: res.mac(bytes(m)) if m is not None else (None, None)  # noqa: E731
    (smac, svend), (dmac, dvend) = mac(ev.smac), mac(ev.dmac)
    d = {
        "func": ev.func, "iface": res.iface(ev.netns, ev.ifindex) if ev.ifindex else None,
        "ifindex": ev.ifindex, "netns": ev.netns,
        "proto": names.proto_name(proto) if proto is not None else None,
        "saddr": str(ev.saddr) if ev.saddr is not None else None,
        "daddr": str(ev.daddr) if ev.saddr is not None else None,
        "sport": ev.sport, "dport": ev.dport, "ttl": ev.ttl,
        "len": ev.ip_len if ev.family in (4, 6) and ev.ip_len else ev.skb_len,
        "smac": smac, "dmac": dmac, "smac_vendor": svend, "dmac_vendor": dvend,
        "tcp_flags": names.tcp_flags(ev.tcp_flags) if proto == 6 and ev.tcp_flags is not None else None,
        "tcp_state": names.tcp_state(ev.tcp_state),
        "seq": ev.seq if proto == 6 else None, "ack": ev.ack if proto == 6 else None,
        "icmp_type": icmp[0], "icmp_code": icmp[1],
        "nf_hook": names.nf_hook(ev.nf_hook), "verdict": names.verdict(ev.verdict),
        "drop_reason": res.drops.name(ev.drop_reason) if ev.drop_reason is not None else None,
        "stack": [res.kallsyms.resolve(a) for a in ev.stack] if ev.stack else None,
        "skb": f"0x{ev.skb:x}", "cpu": ev.cpu, "pid": ev.pid, "comm": output.escape(ev.comm),
    }
    assert ("time",) + tuple(d) == output.JSON_KEYS
    return '{"time":%.6f,' % (ev.ts_ns / 1e9 + clock.offset) + json.dumps(d, separators=(",", ":"))[1:]


def test_json_fast_path_is_byte_identical_to_json_dumps(res):
    """The hand-assembled line equals json.dumps of the documented object, for random events
    rendered in a row (so the renderer's caches are hit as well as filled)."""
    import random
    rng = random.Random(11)
    clock = FixedClock()
    r = output.JsonRenderer(res, clock)
    pool = [_random_event(rng) for _ in range(400)]
    for i in range(3000):
        ev = pool[rng.randrange(len(pool))] if i % 3 else _random_event(rng)
        assert r.render(ev) == _documented(ev, res, clock), ev


def test_renderers_hold_bounded_state_over_200k_distinct_events(res):
    """Decode + table + JSON over 200,000 records with ever new addresses, ports, MACs, comms,
    pids, drop locations: whatever the pipeline keeps (resolver and renderer caches, decode
    caches) must stop growing. A flood of distinct flows grew the process without limit once."""
    import random
    import sys
    import tracemalloc

    from netbee import abi
    from netbee.decode import EVENT_FIELDS, EVENT_STRUCT, decode_event
    rng = random.Random(5)
    idx = {name: i for i, name in enumerate(EVENT_FIELDS)}
    base = list(EVENT_STRUCT.unpack(bytes(abi.EVENT_SIZE)))
    pack = EVENT_STRUCT.pack
    l2 = abi.F_HAS_L2 | abi.F_HAS_L3 | abi.F_HAS_L4
    table = output.TableRenderer(res, color=False, clock=FixedClock())
    js = output.JsonRenderer(res, FixedClock())

    def record(i):
        v = base[:]
        family = 4 if i % 3 else 6
        v[idx["family"]], v[idx["ip_proto"]] = family, (6, 17, 1, 58)[i % 4]
        # every event is new to every cache (drop locations included), so each cycles in 4096
        v[idx["flags"]] = l2 | abi.F_DROP | (abi.F_NF if i % 7 == 0 else 0)
        v[idx["hook"]] = (2, 3, 15, 14, 11)[i % 5]
        v[idx["saddr"]] = rng.getrandbits(128).to_bytes(16, "little")
        v[idx["daddr"]] = rng.getrandbits(128).to_bytes(16, "little")
        v[idx["sport"]], v[idx["dport"]] = rng.randrange(65536), rng.randrange(65536)
        v[idx["smac"]], v[idx["dmac"]] = rng.getrandbits(48).to_bytes(6, "big"), bytes(6)
        v[idx["comm"]] = b"w%d" % i
        v[idx["pid"]], v[idx["cpu"]], v[idx["ifindex"]] = i, i % 64, 5 + i % 3
        v[idx["tcp_flags"]], v[idx["tcp_state"]] = i % 256, i % 13
        v[idx["icmp_type"]], v[idx["icmp_code"]] = i % 20, i % 16
        v[idx["drop_reason"]], v[idx["location"]] = i % 90, 0xFFFFFFFF81000000 + i
        v[idx["ts_ns"]], v[idx["skb"]] = i * 1000, rng.getrandbits(64)
        return pack(*v)

    def run(n):
        for i in range(n):
            ev = decode_event(record(i))
            table.render(ev)
            js.render(ev)

    tracemalloc.start()   # bytes held, while every cache fills and is emptied a few times
    try:
        held = []
        for _ in range(6):
            run(5_000)
            held.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    # Every cache full at once (4096 entries each, emptied when full) is ~10 MB with these
    # records, so the held bytes saw-tooth below that; unbounded caches pass it within 30,000.
    assert max(held) < 16 << 20, held
    blocks = []
    for _ in range(17):   # 170,000 more (tracing off, it slows everything ~3x): live objects
        run(10_000)
        blocks.append(sys.getallocatedblocks())
    # each half spans many fill-and-empty cycles: their peaks match unless something grows
    assert max(blocks[9:]) <= max(blocks[:8]) * 1.15, blocks


def _reference_table(ev, res, color, clock):
    """The table line built field by field, as the renderer was first written (no caches)."""
    import time as _time
    from netbee.resolvers import names
    paint = (lambda code, text: f"{code}{text}{output.RESET}") if color else (lambda code, text: text)

    def endpoint(addr, port):
        text = str(addr)
        return text if port is None else f"[{text}]:{port}" if ":" in text else f"{text}:{port}"

    def mac(m):
        text, vendor = res.mac(bytes(m))
        return f"{text} ({output.escape(vendor)})" if vendor else text

    t = ev.ts_ns / 1e9 + clock.offset
    stamp = _time.strftime("%H:%M:%S", _time.localtime(t)) + f".{int(t * 1e6) % 1000000:06d}"
    if ev.saddr is None:
        flow = f"ethertype 0x{ev.ethertype:04x}" if ev.ethertype else "-"
    else:
        flow = f"{endpoint(ev.saddr, ev.sport)} > {endpoint(ev.daddr, ev.dport)}"
    cols = [stamp, res.iface(ev.netns, ev.ifindex) if ev.ifindex else "-", ev.func,
            names.proto_name(ev.proto) or "-", flow]
    padded = [c.ljust(w) for c, w in zip(cols, (15, 12, 22, 5, 47))]
    if color:
        padded[2] = paint(output.CYAN, padded[2])
    out = []
    if ev.proto == 6 and ev.tcp_flags is not None:
        out.append(f"[{names.tcp_flags(ev.tcp_flags)}] seq {ev.seq} ack {ev.ack} win {ev.window} len {ev.payload_len}")
    elif ev.proto == 17 and ev.udp_len is not None:
        out.append(f"length {max(ev.udp_len - 8, 0)}")
    elif ev.proto in (1, 58) and ev.icmp_type is not None:
        tname, cname = names.icmp(ev.family, ev.icmp_type, ev.icmp_code or 0)
        text = tname + (f" ({cname})" if cname else "")
        if ev.icmp_type in ((8, 0) if ev.family == 4 else (128, 129)) and ev.icmp_id is not None:
            text += f" id {ev.icmp_id} seq {ev.icmp_seq}"
        if ev.inner is not None and ev.inner.saddr is not None:
            text += (f" for {names.proto_name(ev.inner.proto)} {endpoint(ev.inner.saddr, ev.inner.sport)} > "
                     f"{endpoint(ev.inner.daddr, ev.inner.dport)}")
        out.append(text)
    if ev.ttl is not None and ev.family in (4, 6):
        out.append(f"ttl {ev.ttl}")
    if ev.tcp_state is not None:
        out.append(f"state {names.tcp_state(ev.tcp_state)}")
    if ev.nf_hook is not None:
        verdict = names.verdict(ev.verdict) if ev.verdict is not None else "?"
        code = output.RED if verdict == "DROP" else output.GREEN if verdict == "ACCEPT" else output.YELLOW
        out.append(f"nf {names.nf_hook(ev.nf_hook)} {paint(code, verdict)}")
    if ev.drop_reason is not None or ev.hook == 15:
        text = f"DROP {res.drops.name(ev.drop_reason) if ev.drop_reason is not None else '?'}"
        if ev.location:
            text += f" at {res.kallsyms.resolve(ev.location)}"
        out.append(paint(output.RED, text))
    if ev.smac is not None:
        out.append(f"{mac(ev.smac)} > {mac(ev.dmac)}")
    out.append(f"pid {ev.pid} ({output.escape(ev.comm)}) cpu {ev.cpu}")
    line = f"{' '.join(padded)} {'  '.join(out)}".rstrip()
    if ev.stack:
        frames = [f"    #{i:<2} {res.kallsyms.resolve(a)}" for i, a in enumerate(ev.stack)]
        line += "\n" + "\n".join(paint(output.DIM, f) for f in frames)
    return line


@pytest.mark.parametrize("color", [False, True])
def test_table_cached_parts_give_the_same_lines(res, color):
    """Random events in a row (caches hit and filled): each line equals the plain construction."""
    import random
    from netbee.decode import InnerFlow
    rng = random.Random(13 + color)
    clock = FixedClock()
    t = output.TableRenderer(res, color=color, clock=clock)
    pool = []
    for _ in range(400):
        ev = _random_event(rng)
        if ev.proto in (1, 58) and rng.random() < 0.3:
            ev.inner = InnerFlow(17, ev.daddr, ev.saddr, rng.choice((None, 53)), rng.choice((None, 9)))
        pool.append(ev)
    for i in range(3000):
        ev = pool[rng.randrange(len(pool))]
        if i % 4 == 0:
            ev.ts_ns += rng.randrange(10 ** 9)   # same event a moment later: another second
        assert t.render(ev) == _reference_table(ev, res, color, clock), ev


@pytest.mark.parametrize("kind", ["json", "table"])
def test_interface_shown_as_number_is_named_once_it_appears(kind):
    """Text with an unresolved interface number is reused for a while, then the name is looked
    up again: a device created after the trace started gets its name within about a second."""
    now = [0.0]
    known = {5: "veth-a"}
    res = output.Resolvers(ifnames=IfNames(lister=lambda ns: dict(known), clock=lambda: now[0]),
                           oui=OuiResolver(), drops=DropReasons(loader=lambda: {}),
                           kallsyms=Kallsyms(f=io.StringIO(KALLSYMS)))
    r = output.JsonRenderer(res, FixedClock()) if kind == "json" else output.TableRenderer(res, clock=FixedClock())
    iface = (lambda line: json.loads(line)["iface"]) if kind == "json" else (lambda line: line.split()[1])
    assert iface(r.render(event(ifindex=7, ts_ns=1))) == "7"
    assert iface(r.render(event(ifindex=7, ts_ns=2))) == "7"
    known[7] = "veth-new"
    now[0] = 5.0
    assert iface(r.render(event(ifindex=7, ts_ns=3 << 30))) == "veth-new"
    assert iface(r.render(event(ifindex=5, ts_ns=3 << 30))) == "veth-a"
