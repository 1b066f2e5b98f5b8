"""Renderers for decoded events: the live table and JSON lines.

Both escape control characters in comm and interface names (traced data must not drive the
terminal). Colour only when the stream is a TTY and NO_COLOR is unset (https://no-color.org).

JSON: one object per line, always exactly the keys in JSON_KEYS, null where a field does not
apply. Types: time = Unix seconds (float, microseconds), skb = hex string, tcp_flags = tcpdump
letters ("S." = SYN+ACK), icmp_type/icmp_code/tcp_state/nf_hook/verdict/drop_reason = names,
stack = list of "sym+0xoff [module]" strings (drop events with --stack), len = IP length
(IPv4 total length; IPv6 payload + 40), or the skb length when the packet is not IP.

The JSON path is hand-assembled (no dict, no json.dumps per event) because it sits in the hot
loop: cached line templates filled with the per-packet values (netbee/render_records.py uses the
same templates straight from raw records); bench.userspace_breakdown measures it.
"""
from __future__ import annotations

import os
import re
import time
from json.encoder import encode_basestring_ascii as _jstr  # type: ignore[attr-defined]
from typing import Any, Dict, List, Optional, TextIO, Tuple

from netbee.resolvers import names
from netbee.resolvers.drop_reasons import DropReasons
from netbee.resolvers.ifnames import IfNames
from netbee.resolvers.kallsyms import Kallsyms
from netbee.resolvers.oui import OuiResolver

JSON_KEYS = ("time", "func", "iface", "ifindex", "netns", "proto", "saddr", "daddr", "sport",
             "dport", "ttl", "len", "smac", "dmac", "smac_vendor", "dmac_vendor", "tcp_flags",
             "tcp_state", "seq", "ack", "icmp_type", "icmp_code", "nf_hook", "verdict",
             "drop_reason", "stack", "skb", "cpu", "pid", "comm")

_CTRL = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")
NB_HOOK_KFREE_SKB = 15
# Every cache of rendered text holds at most this many entries (emptied when full): a trace
# repeats a few flows, and a flood of distinct ones must not grow the process.
CACHE_MAX = 4096
NB_F_DROP = 0x0020


def escape(text: str) -> str:
    """Control characters (C0, DEL, C1) and backslash as \\xNN, so the result is printable."""
    if not _CTRL.search(text):
        return text
    return _CTRL.sub(lambda m: "\\x%02x" % ord(m.group()), text)


def use_color(stream: TextIO, environ: Optional[Dict[str, str]] = None) -> bool:
    env = os.environ if environ is None else environ
    if "NO_COLOR" in env:
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Clock:
    """bpf_ktime_get_ns() is CLOCK_MONOTONIC: shift by a fixed offset to wall-clock time."""

    def __init__(self) -> None:
        self.offset = time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)

    def wall(self, ts_ns: int) -> float:
        return ts_ns / 1e9 + self.offset


class Resolvers:
    """Everything that turns numbers into names; each loads on first use."""

    def __init__(self, oui_db: Optional[str] = None, btf_path: Optional[str] = None,
                 ifnames: Optional[IfNames] = None, oui: Optional[OuiResolver] = None,
                 drops: Optional[DropReasons] = None, kallsyms: Optional[Kallsyms] = None) -> None:
        self.ifnames = ifnames or IfNames()
        self.oui = oui or OuiResolver(oui_db)
        self.drops = drops or DropReasons(btf_path)
        self.kallsyms = kallsyms or Kallsyms()
        self._iface: Dict[tuple, str] = {}
        self._addr: Dict[Any, str] = {}
        self._mac: Dict[bytes, tuple] = {}

    def iface(self, netns: int, ifindex: int) -> str:
        key = (netns, ifindex)
        name = self._iface.get(key)
        if name is None:
            name = escape(self.ifnames.name(netns, ifindex))
            if not name.isdigit() and len(self._iface) < CACHE_MAX:
                self._iface[key] = name  # numbers are retried: the device may show up later
        return name

    def addr(self, a: Any) -> str:
        s = self._addr.get(a)
        if s is None:
            s = str(a)
            if len(self._addr) >= CACHE_MAX:
                self._addr.clear()
            self._addr[a] = s
        return s

    def mac(self, mac: bytes) -> tuple:
        """(aa:bb:.. text, vendor or mark or None)."""
        hit = self._mac.get(mac)
        if hit is None:
            text = ":".join("%02x" % b for b in mac)
            hit = (text, self.oui.describe(mac))
            if len(self._mac) >= CACHE_MAX:
                self._mac.clear()
            self._mac[mac] = hit
        return hit


class _NumericIfaces:
    """Keys of cached text that shows an interface number where a name was not found (yet).

    They are dropped from their cache once event time reaches the next second (ts >> 30, ~1.07 s),
    so the name is looked up again, about as often as IfNames refreshes a namespace; meanwhile
    the text is reused, not rebuilt for every event."""

    __slots__ = ("keys", "epoch")

    def __init__(self) -> None:
        self.keys: List[Any] = []
        self.epoch = -1

    def add(self, key: Any, ts_ns: int) -> None:
        if not self.keys:
            self.epoch = ts_ns >> 30
        self.keys.append(key)

    def expire(self, cache: Dict[Any, str], ts_ns: int) -> None:
        if ts_ns >> 30 != self.epoch or len(self.keys) >= CACHE_MAX:
            for key in self.keys:
                cache.pop(key, None)
            self.keys = []


def _put(cache: Dict[Any, str], key: Any, value: str) -> None:
    if len(cache) >= CACHE_MAX:
        cache.clear()
    cache[key] = value


def _is_drop(ev: Any) -> bool:
    return ev.drop_reason is not None or ev.hook == NB_HOOK_KFREE_SKB


# ----------------------------------------------------------------------------- JSON

def _s(v: Optional[str]) -> str:
    return "null" if v is None else _jstr(v)


def _lit(text: str) -> str:
    """text as a literal part of a str.format template."""
    return text.replace("{", "{{").replace("}", "}}")


# The positional arguments of a JSON line template (str.format), the values that change with every
# packet: time, skb, sport, dport, len (IP length or, when 0, the skb's), skb length, seq, ack, stack.
# A template names only those its kind of event has; the others are "null" in its text.
JSON_ARGS = ("time", "skb", "sport", "dport", "len", "skb_len", "seq", "ack", "stack")


class JsonRenderer:
    """Each line is a cached str.format template filled with the per-packet values (JSON_ARGS).
    A template depends only on fields that repeat endlessly in a trace (hook, interface,
    addresses, MACs, flags, ttl, names, cpu, pid, comm) and on which fields the event has, so
    templates come from a bounded cache; netbee/render_records.py keys the same templates by the
    raw record's bytes instead of an Event."""

    def __init__(self, res: Resolvers, clock: Optional[Clock] = None) -> None:
        self.res = res
        self.clock = clock or Clock()
        self._lines: Dict[tuple, str] = {}
        self._numeric = _NumericIfaces()

    def _head(self, ev: Any) -> Tuple[str, bool]:
        """func .. daddr, and whether its interface name is final (a number is retried)."""
        ifindex = ev.ifindex
        stable = True
        if ifindex:
            name = self.res.iface(ev.netns, ifindex)
            stable = not name.isdigit()
            iface = _jstr(name)
        else:
            iface = "null"
        proto = ev.proto
        pname = _s(names.proto_name(proto)) if proto is not None else "null"
        saddr = ev.saddr
        if saddr is not None:
            addrs = f'"saddr":{_jstr(str(saddr))},"daddr":{_jstr(str(ev.daddr))}'
        else:
            addrs = '"saddr":null,"daddr":null'
        return (f'"func":{_jstr(ev.func)},"iface":{iface},"ifindex":{ifindex},"netns":{ev.netns},'
                f'"proto":{pname},{addrs}'), stable

    def _tail(self, ev: Any) -> str:
        """sport .. comm (a template: slots {2}.. of JSON_ARGS for the per-packet values)."""
        res = self.res
        proto = ev.proto
        if ev.smac is not None:
            stext, svend = res.mac(bytes(ev.smac))
            dtext, dvend = res.mac(bytes(ev.dmac))
            macs = (f'"smac":"{stext}","dmac":"{dtext}","smac_vendor":{_s(svend)},'
                    f'"dmac_vendor":{_s(dvend)}')
        else:
            macs = '"smac":null,"dmac":null,"smac_vendor":null,"dmac_vendor":null'
        flags = ev.tcp_flags
        tflags = _s(names.tcp_flags(flags)) if proto == 6 and flags is not None else "null"
        if (proto == 1 or proto == 58) and ev.icmp_type is not None:
            tname, cname = names.icmp(ev.family, ev.icmp_type, ev.icmp_code or 0)
            icmp = f'"icmp_type":{_s(tname)},"icmp_code":{_s(cname)}'
        else:
            icmp = '"icmp_type":null,"icmp_code":null'
        drop = ev.drop_reason
        state = _s(names.tcp_state(ev.tcp_state))
        nf = f'"nf_hook":{_s(names.nf_hook(ev.nf_hook))},"verdict":{_s(names.verdict(ev.verdict))},' \
             f'"drop_reason":{_s(res.drops.name(drop)) if drop is not None else "null"}'
        comm = _jstr(escape(ev.comm))
        ttl = "null" if ev.ttl is None else str(ev.ttl)
        # len is the IP length unless it is 0 or the event has none: slot 4 is `ip_len or skb_len`
        ip_len = ev.family in (4, 6) and ev.ip_len is not None
        seq = "{6}" if proto == 6 and ev.seq is not None else "null"
        ack = "{7}" if proto == 6 and ev.ack is not None else "null"
        # Traced text (comm, names, vendors) becomes part of a template: its braces are doubled.
        return (',"sport":' + ("null" if ev.sport is None else "{2}")
                + ',"dport":' + ("null" if ev.dport is None else "{3}")
                + f',"ttl":{ttl},"len":' + ("{4}" if ip_len else "{5}") + ","
                + _lit(f'{macs},"tcp_flags":{tflags},"tcp_state":{state}')
                + f',"seq":{seq},"ack":{ack},' + _lit(f'{icmp},{nf}')
                + ',"stack":' + ("{8}" if ev.stack else "null") + ',"skb":"0x{1:x}",'
                + _lit(f'"cpu":{ev.cpu},"pid":{ev.pid},"comm":{comm}}}'))

    def template(self, ev: Any) -> Tuple[str, bool]:
        """The line template of every event like ev (see JSON_ARGS), and whether it is final
        (False: it shows an interface number whose name may still appear)."""
        head, stable = self._head(ev)
        return '{{"time":{0:.6f},' + _lit(head) + self._tail(ev), stable

    def render(self, ev: Any) -> str:
        proto = ev.proto
        saddr = ev.saddr
        ip_len = ev.ip_len
        stack = ev.stack
        # ipaddress objects hash in Python code; their integer value hashes in C.
        key = (ev.func, ev.ifindex, ev.netns, proto, ev.family,
               saddr._ip if saddr is not None else None, ev.daddr._ip if saddr is not None else None,
               ev.smac, ev.dmac, ev.tcp_flags, ev.tcp_state, ev.icmp_type, ev.icmp_code, ev.nf_hook,
               ev.verdict, ev.drop_reason, ev.cpu, ev.pid, ev.comm, ev.ttl, ev.sport is None,
               ev.dport is None, ip_len is None, ev.seq is None, ev.ack is None, not stack)
        if self._numeric.keys:
            self._numeric.expire(self._lines, ev.ts_ns)
        line = self._lines.get(key)
        if line is None:
            line, stable = self.template(ev)
            _put(self._lines, key, line)
            if not stable:
                self._numeric.add(key, ev.ts_ns)
        skb_len = ev.skb_len
        return line.format(ev.ts_ns / 1e9 + self.clock.offset, ev.skb, ev.sport, ev.dport, ip_len or skb_len,
                           skb_len, ev.seq, ev.ack, self._stack(stack) if stack else None)

    def _stack(self, stack: List[int]) -> str:
        resolve = self.res.kallsyms.resolve
        return "[" + ",".join(_jstr(resolve(a)) for a in stack) + "]"


# ----------------------------------------------------------------------------- table

# The positional arguments of a table line template (str.format), the values that change with
# every packet: the time stamp, TCP seq, ack, window and payload length, the UDP payload length
# (udp_len - 8, at least 0), the ICMP echo id and sequence.
TABLE_ARGS = ("stamp", "seq", "ack", "window", "payload_len", "udp_payload", "icmp_id", "icmp_seq")


def _slot(value: Optional[int], index: int) -> str:
    """A template slot for a per-packet number, or the text the line shows when it is absent."""
    return "None" if value is None else "{%d}" % index


RED, GREEN, YELLOW, CYAN, DIM, RESET = ("\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[36m",
                                        "\x1b[2m", "\x1b[0m")
HEADER = ("TIME", "IFACE", "HOOK", "PROTO", "FLOW")


class TableRenderer:
    """One line per event: TIME IFACE HOOK PROTO FLOW DETAILS; drop stacks on following lines.

    TCP flags use tcpdump's letters: S SYN, F FIN, P PSH, R RST, U URG, E ECE, W CWR, "." ACK.
    """

    widths = (15, 12, 22, 5, 47)

    def __init__(self, res: Resolvers, color: bool = False, clock: Optional[Clock] = None) -> None:
        self.res = res
        self.color = color
        self.clock = clock or Clock()
        self._sec = -1
        self._hms = ""
        self._prefixes: Dict[tuple, str] = {}
        self._flows: Dict[tuple, str] = {}
        self._tails: Dict[tuple, str] = {}
        self._tcp_flags: Dict[int, str] = {}
        self._numeric = _NumericIfaces()

    def header(self) -> str:
        cols = [h.ljust(w) for h, w in zip(HEADER, self.widths)]
        return " ".join(cols) + " DETAILS"

    def _paint(self, code: str, text: str) -> str:
        return f"{code}{text}{RESET}" if self.color else text

    def _endpoint(self, addr: Any, port: Optional[int]) -> str:
        text = self.res.addr(addr)
        if port is None:
            return text
        return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"

    def flow(self, ev: Any) -> str:
        if ev.saddr is None:
            return f"ethertype 0x{ev.ethertype:04x}" if ev.ethertype else "-"
        return f"{self._endpoint(ev.saddr, ev.sport)} > {self._endpoint(ev.daddr, ev.dport)}"

    def details(self, ev: Any) -> List[str]:
        out: List[str] = []
        proto = ev.proto
        if proto == 6 and ev.tcp_flags is not None:
            out.append(f"[{names.tcp_flags(ev.tcp_flags)}] seq {ev.seq} ack {ev.ack}"
                       f" win {ev.window} len {ev.payload_len}")
        elif proto == 17 and ev.udp_len is not None:
            out.append(f"length {max(ev.udp_len - 8, 0)}")
        elif proto in (1, 58) and ev.icmp_type is not None:
            out.append(self._icmp(ev))
        if ev.ttl is not None and ev.family in (4, 6):
            out.append(f"ttl {ev.ttl}")
        return out + self._tail_parts(ev)

    def _mac(self, mac: bytes) -> str:
        text, vendor = self.res.mac(bytes(mac))
        return f"{text} ({escape(vendor)})" if vendor else text

    def render(self, ev: Any) -> str:
        # The same text as stamp + columns + details() would give, from bounded caches of the
        # parts that repeat (the second, hook/interface/protocol, flow, and the trailing details).
        t = ev.ts_ns / 1e9 + self.clock.offset
        sec = int(t)
        if sec != self._sec:
            self._hms = time.strftime("%H:%M:%S", time.localtime(t))
            self._sec = sec
        ifindex, netns, func, proto = ev.ifindex, ev.netns, ev.func, ev.proto
        pkey = (netns, ifindex, func, proto)
        if self._numeric.keys:
            self._numeric.expire(self._prefixes, ev.ts_ns)
        prefix = self._prefixes.get(pkey)
        if prefix is None:
            prefix, stable = self._prefix(netns, ifindex, func, proto)
            _put(self._prefixes, pkey, prefix)
            if not stable:
                self._numeric.add(pkey, ev.ts_ns)
        saddr = ev.saddr
        if saddr is None:
            fkey: tuple = (ev.ethertype,)
        else:
            fkey = (ev.family, saddr._ip, ev.sport, ev.daddr._ip, ev.dport)
        flow = self._flows.get(fkey)
        if flow is None:
            flow = self.flow(ev).ljust(self.widths[4])
            _put(self._flows, fkey, flow)
        family = ev.family
        parts = []
        if proto == 6 and ev.tcp_flags is not None:
            flags = self._tcp_flags.get(ev.tcp_flags)
            if flags is None:
                flags = self._tcp_flags[ev.tcp_flags] = names.tcp_flags(ev.tcp_flags)
            parts.append("[%s] seq %s ack %s win %s len %s" % (flags, ev.seq, ev.ack, ev.window, ev.payload_len))
        elif proto == 17 and ev.udp_len is not None:
            parts.append("length %d" % max(ev.udp_len - 8, 0))
        elif proto in (1, 58) and ev.icmp_type is not None:
            parts.append(self._icmp(ev))
        if ev.ttl is not None and family in (4, 6):
            parts.append("ttl %d" % ev.ttl)
        tkey = (ev.tcp_state, ev.nf_hook, ev.verdict, ev.drop_reason, ev.hook, ev.location, ev.smac, ev.dmac,
                ev.pid, ev.comm, ev.cpu)
        tail = self._tails.get(tkey)
        if tail is None:
            tail = "  ".join(self._tail_parts(ev))
            _put(self._tails, tkey, tail)
        parts.append(tail)
        line = ("%s%s%s %s" % (("%s.%06d" % (self._hms, int(t * 1e6) % 1000000)).ljust(15), prefix, flow,
                               "  ".join(parts))).rstrip()
        if ev.stack:
            frames = [f"    #{i:<2} {self.res.kallsyms.resolve(a)}" for i, a in enumerate(ev.stack)]
            line += "\n" + "\n".join(self._paint(DIM, f) for f in frames)
        return line

    def template(self, ev: Any) -> Tuple[str, bool]:
        """The line of every event like ev (one without a stack) as a str.format template of
        TABLE_ARGS, and whether it is final (False: it shows an interface number whose name may
        still appear). netbee/render_records.py fills it from raw records."""
        prefix, stable = self._prefix(ev.netns, ev.ifindex, ev.func, ev.proto)
        proto = ev.proto
        parts = []
        if proto == 6 and ev.tcp_flags is not None:
            parts.append(_lit(f"[{names.tcp_flags(ev.tcp_flags)}]") + " seq %s ack %s win %s len %s" % (
                _slot(ev.seq, 1), _slot(ev.ack, 2), _slot(ev.window, 3), _slot(ev.payload_len, 4)))
        elif proto == 17 and ev.udp_len is not None:
            parts.append("length {5}")
        elif proto in (1, 58) and ev.icmp_type is not None:
            parts.append(self._icmp(ev, template=True))
        if ev.ttl is not None and ev.family in (4, 6):
            parts.append("ttl %d" % ev.ttl)
        parts.append(_lit("  ".join(self._tail_parts(ev))))
        # "%H:%M:%S.%06d" is always 15 characters: the time column needs no padding
        return ("{0}" + _lit(prefix + self.flow(ev).ljust(self.widths[4])) + " " + "  ".join(parts)).rstrip(), stable

    def _prefix(self, netns: int, ifindex: int, func: str, proto: Optional[int]) -> Tuple[str, bool]:
        """' IFACE HOOK PROTO ' padded, and whether the interface name is final (a number is retried)."""
        iface = self.res.iface(netns, ifindex) if ifindex else "-"
        w = self.widths
        hook = func.ljust(w[2])
        if self.color:
            hook = self._paint(CYAN, hook)
        return f" {iface.ljust(w[1])} {hook} {(names.proto_name(proto) or '-').ljust(w[3])} ", not iface.isdigit()

    def _icmp(self, ev: Any, template: bool = False) -> str:
        """The ICMP part of details(); the one of the first branch that varies the most. As a
        template (see template()), the echo id and sequence are slots."""
        tname, cname = names.icmp(ev.family, ev.icmp_type, ev.icmp_code or 0)
        text = tname + (f" ({cname})" if cname else "")
        echo = ""
        if ev.icmp_type in ((8, 0) if ev.family == 4 else (128, 129)) and ev.icmp_id is not None:
            echo = f" id {_slot(ev.icmp_id, 6)} seq {_slot(ev.icmp_seq, 7)}" if template else \
                f" id {ev.icmp_id} seq {ev.icmp_seq}"
        inner = getattr(ev, "inner", None)
        flow = ""
        if inner is not None and inner.saddr is not None:
            flow = (f" for {names.proto_name(inner.proto)} "
                    f"{self._endpoint(inner.saddr, inner.sport)} > "
                    f"{self._endpoint(inner.daddr, inner.dport)}")
        return _lit(text) + echo + _lit(flow) if template else text + echo + flow

    def _tail_parts(self, ev: Any) -> List[str]:
        """details() after the protocol and ttl parts: state, nf verdict, drop, MACs, process."""
        out: List[str] = []
        if ev.tcp_state is not None:
            out.append(f"state {names.tcp_state(ev.tcp_state)}")
        if ev.nf_hook is not None:
            verdict = names.verdict(ev.verdict) if ev.verdict is not None else "?"
            code = RED if verdict == "DROP" else GREEN if verdict == "ACCEPT" else YELLOW
            out.append(f"nf {names.nf_hook(ev.nf_hook)} {self._paint(code, verdict)}")
        if _is_drop(ev):
            reason = self.res.drops.name(ev.drop_reason) if ev.drop_reason is not None else "?"
            text = f"DROP {reason}"
            if ev.location:
                text += f" at {self.res.kallsyms.resolve(ev.location)}"
            out.append(self._paint(RED, text))
        if ev.smac is not None:
            out.append(f"{self._mac(ev.smac)} > {self._mac(ev.dmac)}")
        out.append(f"pid {ev.pid} ({escape(ev.comm)}) cpu {ev.cpu}")
        return out
