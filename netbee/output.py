"""Renderers for decoded events: the live table and JSON lines.

Both escape control characters in comm and interface names (traced data must not drive the
terminal). Colour only when the stream is a TTY and NO_COLOR is unset (https://no-color.org).

JSON: one object per line, always exactly the keys in JSON_KEYS, null where a field does not
apply. Types: time = Unix seconds (float, microseconds), skb = hex string, tcp_flags = tcpdump
letters ("S." = SYN+ACK), icmp_type/icmp_code/tcp_state/nf_hook/verdict/drop_reason = names,
stack = list of "sym+0xoff [module]" strings (drop events with --stack), len = IP length
(IPv4 total length; IPv6 payload + 40), or the skb length when the packet is not IP.

The JSON path is hand-assembled (no dict, no json.dumps per event) because it sits in the hot
loop: scripts/bench_output.py measures decode+render.
"""
from __future__ import annotations

import os
import re
import time
from json.encoder import encode_basestring_ascii as _jstr  # type: ignore[attr-defined]
from typing import Any, Callable, Dict, List, Optional, TextIO

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
            if not name.isdigit() and len(self._iface) < 4096:
                self._iface[key] = name  # numbers are retried: the device may show up later
        return name

    def addr(self, a: Any) -> str:
        s = self._addr.get(a)
        if s is None:
            s = str(a)
            if len(self._addr) > 65536:
                self._addr.clear()
            self._addr[a] = s
        return s

    def mac(self, mac: bytes) -> tuple:
        """(aa:bb:.. text, vendor or mark or None)."""
        hit = self._mac.get(mac)
        if hit is None:
            text = ":".join("%02x" % b for b in mac)
            hit = (text, self.oui.describe(mac))
            if len(self._mac) > 65536:
                self._mac.clear()
            self._mac[mac] = hit
        return hit


def _is_drop(ev: Any) -> bool:
    return ev.drop_reason is not None or ev.hook == NB_HOOK_KFREE_SKB


def _len(ev: Any) -> Optional[int]:
    return ev.ip_len if ev.family in (4, 6) and ev.ip_len else ev.skb_len


# ----------------------------------------------------------------------------- JSON

def _n(v: Optional[int]) -> str:
    return "null" if v is None else str(v)


def _s(v: Optional[str]) -> str:
    return "null" if v is None else _jstr(v)


class JsonRenderer:
    def __init__(self, res: Resolvers, clock: Optional[Clock] = None) -> None:
        self.res = res
        self.clock = clock or Clock()
        # Per-kind caches of already JSON-encoded names: the values repeat endlessly.
        self._func: Dict[Any, str] = {}
        self._proto: Dict[Any, str] = {}
        self._flags: Dict[Any, str] = {}
        self._state: Dict[Any, str] = {}
        self._nf: Dict[Any, str] = {}
        self._verdict: Dict[Any, str] = {}
        self._drop: Dict[Any, str] = {}
        self._addrs: Dict[Any, str] = {}
        self._macs: Dict[Any, str] = {}
        self._icmp: Dict[Any, str] = {}

    @staticmethod
    def _cached(cache: Dict[Any, str], value: Any, fn: Callable[[Any], Optional[str]]) -> str:
        s = cache.get(value)
        if s is None:
            s = _s(fn(value)) if value is not None else "null"
            if len(cache) > 65536:
                cache.clear()
            cache[value] = s
        return s

    def render(self, ev: Any) -> str:
        res = self.res
        c = self._cached
        proto = ev.proto
        family = ev.family
        smac = ev.smac
        if smac is not None:
            mkey = (smac, ev.dmac)
            macs = self._macs.get(mkey)
            if macs is None:
                stext, svend = res.mac(bytes(smac))
                dtext, dvend = res.mac(bytes(ev.dmac))
                macs = (f'"smac":"{stext}","dmac":"{dtext}","smac_vendor":{_s(svend)},'
                        f'"dmac_vendor":{_s(dvend)}')
                if len(self._macs) > 65536:
                    self._macs.clear()
                self._macs[mkey] = macs
        else:
            macs = '"smac":null,"dmac":null,"smac_vendor":null,"dmac_vendor":null'
        if proto == 6:
            tcp = (f'"tcp_flags":{c(self._flags, ev.tcp_flags, names.tcp_flags)},'
                   f'"tcp_state":{c(self._state, ev.tcp_state, names.tcp_state)},'
                   f'"seq":{_n(ev.seq)},"ack":{_n(ev.ack)}')
        else:
            tcp = (f'"tcp_flags":null,"tcp_state":{c(self._state, ev.tcp_state, names.tcp_state)},'
                   f'"seq":null,"ack":null')
        if (proto == 1 or proto == 58) and ev.icmp_type is not None:
            key = (family, ev.icmp_type, ev.icmp_code or 0)
            icmp = self._icmp.get(key)
            if icmp is None:
                tname, cname = names.icmp(*key)
                icmp = self._icmp[key] = f'"icmp_type":{_s(tname)},"icmp_code":{_s(cname)}'
        else:
            icmp = '"icmp_type":null,"icmp_code":null'
        if ev.stack:
            stack = "[" + ",".join(_jstr(res.kallsyms.resolve(a)) for a in ev.stack) + "]"
        else:
            stack = "null"
        saddr = ev.saddr
        if saddr is not None:
            # ipaddress objects hash in Python code; their integer value hashes in C.
            akey = (family, saddr._ip, ev.daddr._ip)
            addrs = self._addrs.get(akey)
            if addrs is None:
                addrs = f'"saddr":{_jstr(str(saddr))},"daddr":{_jstr(str(ev.daddr))}'
                if len(self._addrs) > 65536:
                    self._addrs.clear()
                self._addrs[akey] = addrs
        else:
            addrs = '"saddr":null,"daddr":null'
        ifindex = ev.ifindex
        iface = _jstr(res.iface(ev.netns, ifindex)) if ifindex else "null"
        return (
            f'{{"time":{ev.ts_ns / 1e9 + self.clock.offset:.6f},'
            f'"func":{c(self._func, ev.func, str)},"iface":{iface},'
            f'"ifindex":{ifindex},"netns":{ev.netns},"proto":{c(self._proto, proto, names.proto_name)},'
            f'{addrs},"sport":{_n(ev.sport)},"dport":{_n(ev.dport)},"ttl":{_n(ev.ttl)},'
            f'"len":{_n(_len(ev))},{macs},{tcp},{icmp},'
            f'"nf_hook":{c(self._nf, ev.nf_hook, names.nf_hook)},'
            f'"verdict":{c(self._verdict, ev.verdict, names.verdict)},'
            f'"drop_reason":{c(self._drop, ev.drop_reason, res.drops.name)},"stack":{stack},'
            f'"skb":"0x{ev.skb:x}","cpu":{ev.cpu},"pid":{ev.pid},'
            f'"comm":{_jstr(escape(ev.comm))}}}'
        )


# ----------------------------------------------------------------------------- table

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
            tname, cname = names.icmp(ev.family, ev.icmp_type, ev.icmp_code or 0)
            text = tname + (f" ({cname})" if cname else "")
            if ev.icmp_type in ((8, 0) if ev.family == 4 else (128, 129)) and ev.icmp_id is not None:
                text += f" id {ev.icmp_id} seq {ev.icmp_seq}"
            inner = getattr(ev, "inner", None)
            if inner is not None and inner.saddr is not None:
                text += (f" for {names.proto_name(inner.proto)} "
                         f"{self._endpoint(inner.saddr, inner.sport)} > "
                         f"{self._endpoint(inner.daddr, inner.dport)}")
            out.append(text)
        if ev.ttl is not None and ev.family in (4, 6):
            out.append(f"ttl {ev.ttl}")
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

    def _mac(self, mac: bytes) -> str:
        text, vendor = self.res.mac(bytes(mac))
        return f"{text} ({escape(vendor)})" if vendor else text

    def render(self, ev: Any) -> str:
        t = self.clock.wall(ev.ts_ns)
        stamp = time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1e6) % 1000000:06d}"
        iface = self.res.iface(ev.netns, ev.ifindex) if ev.ifindex else "-"
        cols = [stamp, iface, ev.func, names.proto_name(ev.proto) or "-", self.flow(ev)]
        padded = [c.ljust(w) for c, w in zip(cols, self.widths)]
        if self.color:
            padded[2] = self._paint(CYAN, padded[2])
        line = " ".join(padded)
        line = f"{line} {'  '.join(self.details(ev))}".rstrip()
        if ev.stack:
            frames = [f"    #{i:<2} {self.res.kallsyms.resolve(a)}" for i, a in enumerate(ev.stack)]
            line += "\n" + "\n".join(self._paint(DIM, f) for f in frames)
        return line
