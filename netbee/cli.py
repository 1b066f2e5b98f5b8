"""The netbee command: options -> filter + tracer -> live table or JSON lines.

Every NetBeeError becomes one line `netbee: <message>` on stderr and exit status 2; an unexpected
error is one line too (exit 1), with a traceback only under -v.
"""
from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, TextIO

from netbee import __version__
from netbee.loader.errors import NetBeeError, UsageError

if TYPE_CHECKING:
    from netbee.loader.background_parse import BackgroundParse
    from netbee.nft_listing import ChainListing

PROG = "netbee"
CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39
# How long a read waits for the first record; also how often the stop flag is checked when idle.
POLL_TIMEOUT = 0.1
# Events rendered per write: large enough to amortize the per-batch work, small enough that
# the batch and its text stay well under a MiB and a stop request is seen within ~5 ms.
BATCH = 1024

EXAMPLES = """\
examples:
  why is my packet dropped? (drop reason and kernel call stack for pings to 10.0.0.7)
    sudo netbee --stack -p icmp -H 10.0.0.7
  does my firewall rule match? (netfilter hooks with verdicts for TCP port 22)
    sudo netbee -p tcp -P 22
  follow a TCP handshake between two hosts, tcpdump-style expression
    sudo netbee 'tcp and host 10.0.0.7 and port 443'
  one interface of another network namespace, 20 events as JSON lines
    sudo netbee --netns blue -i veth0 -c 20 --json
  which kernel features and backends are available here
    sudo netbee --probe

Options of one kind are ORed (-p icmp -p udp, or -p icmp,udp); different options and the
expression are ANDed. The expression is tcpdump's syntax for: host, src/dst host, net CIDR,
port, src/dst port, portrange A-B, tcp, udp, icmp, icmp6, proto N, ip, ip6, and, or, not,
parentheses; as in tcpdump, `and' and `or' have equal precedence, left to right.
Without --netns, events of every network namespace are shown and netfilter verdicts are
taken in the current one; --netns NAME restricts both to NAME. TCP flags use tcpdump's letters
(S SYN, F FIN, P PSH, R RST, U URG, E ECE, W CWR, "." ACK). Colour only on a terminal and
never with NO_COLOR set. Exit status: 0 done, 2 bad usage or a kernel/tool error, 1 a bug.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse prints usage + message on two lines; we promise one line.
        raise UsageError(f"{message} (see netbee --help)")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse builds a formatter for every add_argument (to check its metavar), and each asks
    shutil for the terminal's width: importing shutil for that was ~2.5 ms of every start. The
    width is asked here the way shutil.get_terminal_size does."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: Optional[int] = None) -> None:
        if width is None:
            width = _terminal_columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


def _terminal_columns() -> int:
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, formatter_class=_HelpFormatter,
                description="Show, live, each packet passing the kernel's network hooks\n"
                            "(receive, IP, TCP/UDP/ICMP, netfilter with verdicts, transmit)\n"
                            "and where and why it was dropped.",
                epilog=EXAMPLES)
    f = p.add_argument_group("filter")
    f.add_argument("expression", nargs="*", metavar="EXPRESSION",
                   help="tcpdump-style filter expression (words are joined with spaces)")
    f.add_argument("-p", "--protocol", action="append", default=[], metavar="PROTO",
                   help="tcp, udp, icmp, icmp6, sctp or a number; a comma list or repeated")
    f.add_argument("-H", "--host", action="append", default=[], metavar="ADDR",
                   help="source or destination address or CIDR (IPv4 or IPv6)")
    f.add_argument("--src-host", action="append", default=[], metavar="ADDR",
                   help="source address or CIDR")
    f.add_argument("--dst-host", action="append", default=[], metavar="ADDR",
                   help="destination address or CIDR")
    f.add_argument("-P", "--port", action="append", default=[], metavar="PORT",
                   help="source or destination port or range A-B (TCP, UDP, SCTP)")
    f.add_argument("--src-port", action="append", default=[], metavar="PORT",
                   help="source port or range A-B")
    f.add_argument("--dst-port", action="append", default=[], metavar="PORT",
                   help="destination port or range A-B")
    f.add_argument("-i", "--interface", action="append", default=[], metavar="IFACE",
                   help="interface name (or index) in the traced namespace")
    f.add_argument("--netns", action="append", default=[], metavar="NS",
                   help="network namespace NAME (ip netns), PATH (/proc/PID/ns/net) or 'all'")
    t = p.add_argument_group("tracing")
    t.add_argument("--backend", choices=("auto", "fentry", "kprobe", "tracepoint"),
                   default="auto", help="hook mechanism (default: auto, the best this kernel has)")
    t.add_argument("--btf", metavar="PATH",
                   help="kernel BTF to use instead of /sys/kernel/btf/vmlinux")
    t.add_argument("--stack", action="store_true",
                   help="show the kernel call stack under each drop event")
    t.add_argument("--ringbuf-size", metavar="BYTES", default="4M",
                   help="ring buffer size, a power of two, K/M suffixes allowed (default: 4M)")
    t.add_argument("--no-cache", action="store_true",
                   help="load the programs afresh and keep none: by default the programs one run "
                        "loads stay pinned in /sys/fs/bpf/netbee (unattached) until reboot, and the "
                        "same command run again starts from them in a few milliseconds; their "
                        "relocated code and hook plan stay in /var/cache/netbee for other filters "
                        "and later boots of the same kernel")
    t.add_argument("--clear-cache", action="store_true",
                   help="remove the programs and relocated code kept by earlier runs (those of a "
                        "running netbee stay) and exit")
    o = p.add_argument_group("output")
    o.add_argument("-c", "--count", type=int, metavar="N",
                   help="stop after N events")
    o.add_argument("--json", action="store_true",
                   help="one JSON object per line (keys: see the man page)")
    o.add_argument("--oui-db", metavar="FILE",
                   help="MAC vendor database (default: the one shipped with netbee)")
    o.add_argument("-v", "--verbose", action="store_true",
                   help="verifier logs, the compiled filter, tracebacks for internal errors")
    o.add_argument("--probe", action="store_true",
                   help="print the kernel feature table and exit")
    o.add_argument("--version", action="version", version=f"netbee {__version__}")
    return p


# ----------------------------------------------------------------------------- helpers

def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().rstrip("b")
    mult = 1
    if t and t[-1] in units:
        mult, t = units[t[-1]], t[:-1]
    if not t.isdigit():
        raise UsageError(f"bad --ringbuf-size {text!r}: expected a number of bytes (e.g. 4M)")
    size = int(t) * mult
    if size < 4096 or size & (size - 1):
        raise UsageError(f"bad --ringbuf-size {text!r}: must be a power of two >= 4096")
    return size


def has_privileges(status_text: str) -> bool:
    """CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN, in the effective set (/proc/self/status)."""
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            eff = int(line.split()[1], 16)
            if eff & (1 << CAP_SYS_ADMIN):
                return True
            return bool(eff & (1 << CAP_BPF)) and bool(eff & (1 << CAP_PERFMON))
    return os.geteuid() == 0


def check_privileges() -> None:
    try:
        with open("/proc/self/status") as f:
            ok = has_privileges(f.read())
    except OSError:
        ok = os.geteuid() == 0
    if not ok:
        raise UsageError("needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN): run it with sudo")


def resolve_interfaces(names: Sequence[str], ns_specs: Sequence[str]) -> tuple:
    """-i values -> (ifindexes, netns inode they belong to)."""
    import socket

    from netbee import netns

    specs = [s for s in ns_specs]
    if "all" in specs or len(specs) > 1:
        raise UsageError("-i needs a single --netns (an interface index means different "
                         "devices in different namespaces)")
    ns = netns.resolve_one(specs[0]) if specs else netns.current()
    found: List[int] = []

    def lookup() -> None:
        for name in names:
            if name.isdigit():
                found.append(int(name))
                continue
            try:
                found.append(socket.if_nametoindex(name))
            except OSError:
                where = "" if not specs else f" in network namespace {specs[0]}"
                raise UsageError(f"no interface {name!r}{where}") from None

    if specs and ns.inode != netns.current().inode:
        with netns.entered(ns):
            lookup()
    else:
        lookup()
    return found, ns.inode


def netns_inodes(specs: Sequence[str]) -> List[int]:
    from netbee import netns

    if not specs or "all" in specs:
        return []
    return [ns.inode for ns in netns.resolve(specs)]


def start_line(report: Any) -> str:
    parts = [f"netbee: tracing with the {report.backend} backend; attached: "
             + (", ".join(report.attached) or "nothing")]
    if report.skipped:
        parts.append("skipped: " + ", ".join(f"{h} ({why})" for h, why in report.skipped))
    if getattr(report, "blind_spots", None):
        parts.append("blind spots: " + "; ".join(report.blind_spots))
    if getattr(report, "netns", None):
        parts.append("netfilter in: " + ", ".join(report.netns))
    return "; ".join(parts).replace("\n", " ")


def summary_line(shown: int, counters: Any) -> str:
    hooks = ", ".join(f"{k} {v}" for k, v in sorted(counters.per_hook.items(),
                                                     key=lambda kv: (-kv[1], kv[0])))
    return (f"netbee: {shown} events shown, {counters.filtered} filtered in the kernel, "
            f"{counters.lost} lost; per hook: {hooks or 'none'}")


def format_probe(table: Any) -> str:
    if isinstance(table, str):
        return table.rstrip("\n")
    rows = [tuple(("yes" if c else "no") if isinstance(c, bool) else str(c) for c in row)
            for row in table]
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(max(map(len, rows)))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _show(tracer: Any, renderer: Any, out: TextIO, flag: "_StopFlag", count: Optional[int],
          ringbuf: int) -> int:
    """Render events until stopped or count is reached; returns how many were shown.

    One write per ring buffer batch, flushed whenever the ring buffer is empty (before the read
    that blocks), so a quiet trace still shows each event at once. On SIGINT/SIGTERM the records
    already queued are shown too: the kernel counted them as submitted, the summary must agree."""
    from netbee.abi import EVENT_SIZE
    from netbee.loader.ringbuf import HDR_SIZE
    from netbee.render_records import records_renderer

    write = out.write
    render = records_renderer(renderer)
    shown = 0
    while not flag.stop and (count is None or shown < count):
        limit = BATCH if count is None else min(BATCH, count - shown)
        records = tracer.read_records(timeout=POLL_TIMEOUT, limit=limit)
        if records:
            write("\n".join(render(records)) + "\n")
            shown += len(records)
        if not records or not tracer.pending():
            out.flush()
    if flag.stop:
        # What the kernel has queued by now, at most one ring buffer's worth (and the count).
        left = ringbuf // (EVENT_SIZE + HDR_SIZE)
        if count is not None:
            left = min(left, count - shown)
        while left > 0:
            records = tracer.read_records(timeout=0, limit=min(BATCH, left))
            if not records:
                break
            write("\n".join(render(records)) + "\n")
            shown += len(records)
            left -= len(records)
        out.flush()
    return shown


class _StopFlag:
    """SIGINT/SIGTERM set a flag the loop checks between events: raising from the handler could
    abandon an event already taken from the ring buffer (counted, never shown)."""

    def __init__(self) -> None:
        self.stop = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.stop = True


# ----------------------------------------------------------------------------- main

def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    chains = _list_chains_ahead(args)
    ahead = _read_object_ahead(args)
    try:
        return _run(args, out, err, ahead, chains)
    finally:
        for started in [ahead, *chains]:
            if started is not None:
                started.close()


def _list_chains_ahead(args: argparse.Namespace) -> List["ChainListing"]:
    """A trace lists each namespace's nftables chains (blind spots) once attached: nft starts
    now, on a CPU nothing else uses yet, and the tracer takes the output at the end. Not for
    `--netns all` (maybe many namespaces, each a process) nor a spec that does not resolve
    (reported later, after the rest of the input)."""
    if args.clear_cache or args.probe or "all" in args.netns:
        return []
    from netbee.nft_listing import ChainListing

    if not args.netns:
        listing = ChainListing.start()
        return [listing] if listing is not None else []
    from netbee import netns

    try:
        namespaces = netns.resolve(args.netns)
    except NetBeeError:
        return []
    return [listing for listing in map(ChainListing.start, namespaces) if listing is not None]


def _read_object_ahead(args: argparse.Namespace) -> Optional["BackgroundParse"]:
    """With --no-cache the BPF object is parsed whatever happens: a child starts reading it now,
    while this process imports the tracer and compiles the filter (~25 ms sooner than the
    tracer could fork it). None for the other commands, or when no child can be had."""
    if not args.no_cache or args.clear_cache or args.probe:
        return None
    from netbee.loader.background_parse import BackgroundParse
    from netbee.prebuilt import default_object_path

    try:
        path = default_object_path()
    except NetBeeError:
        return None   # the tracer says so, after the input was checked
    ahead = BackgroundParse(path, args.btf)
    return ahead if ahead.forked else None


def _run(args: argparse.Namespace, out: TextIO, err: TextIO, ahead: Optional["BackgroundParse"],
         chains: Sequence["ChainListing"] = ()) -> int:
    from netbee import filter as nbfilter
    from netbee import output

    expression = " ".join(args.expression) or None
    ns_specs = list(args.netns)
    ifindexes: List[int] = []
    inodes: List[int] = []
    if args.count is not None and args.count <= 0:
        raise UsageError(f"bad --count {args.count}: must be at least 1")
    ringbuf = parse_size(args.ringbuf_size)
    if args.oui_db and not os.path.isfile(args.oui_db):
        raise UsageError(f"cannot read OUI database {args.oui_db}: no such file")
    if args.clear_cache:
        check_privileges()
        from netbee import prepcache, progcache
        removed, busy = progcache.ProgramCache().clear()
        print(f"netbee: program cache: removed {removed} entries" + (f", {busy} in use kept" if busy else ""),
              file=err)
        print(f"netbee: relocated code cache: removed {prepcache.PreparedCache().clear()} entries", file=err)
        return 0
    if args.probe:
        check_privileges()
        from netbee.loader import features
        print(format_probe(features.probe_table()), file=out)
        return 0
    # Input first (bad input is reported even without privileges), then privileges.
    rules = nbfilter.compile_filter(expression, protocols=args.protocol, hosts=args.host,
                                    src_hosts=args.src_host, dst_hosts=args.dst_host,
                                    ports=args.port, src_ports=args.src_port,
                                    dst_ports=args.dst_port)
    check_privileges()
    if args.interface:
        ifindexes, ns_inode = resolve_interfaces(args.interface, ns_specs)
        inodes = [ns_inode]
    else:
        inodes = netns_inodes(ns_specs)
    rules = nbfilter.compile_filter(expression, protocols=args.protocol, hosts=args.host,
                                    src_hosts=args.src_host, dst_hosts=args.dst_host,
                                    ports=args.port, src_ports=args.src_port,
                                    dst_ports=args.dst_port, ifindexes=ifindexes,
                                    netns_inodes=inodes)
    if args.verbose:
        print(f"netbee: filter program ({len(rules)} rules): {nbfilter.describe_rules(rules)}",
              file=err)

    res = output.Resolvers(oui_db=args.oui_db, btf_path=args.btf)
    if args.oui_db:
        # a bad file of the user's is reported before tracing; the packaged database (tested
        # with the package) loads at the first MAC address shown, not on the way to "tracing"
        res.oui.check()
    renderer: Any
    if args.json:
        renderer = output.JsonRenderer(res)
    else:
        renderer = output.TableRenderer(res, color=output.use_color(out))

    from netbee.tracer import TraceOptions, Tracer

    cache = prepared = None
    if not args.no_cache:
        from netbee.prepcache import PreparedCache
        from netbee.progcache import ProgramCache
        cache, prepared = ProgramCache(), PreparedCache()
    opts = TraceOptions(backend=args.backend, netns=ns_specs or None, rules=rules,
                        want_stack=args.stack, btf_path=args.btf, ringbuf_bytes=ringbuf,
                        verbose=args.verbose, cache=cache, prepared_cache=prepared,
                        any_filter_programs=cache is not None)
    shown = 0
    flag = _StopFlag()
    old_handlers = {sig: signal.signal(sig, flag) for sig in (signal.SIGTERM, signal.SIGINT)}
    tracer = Tracer(opts, parse_ahead=ahead, chains_ahead=chains)
    try:
        report = tracer.start()
        if tracer.drop_reason_values is not None:
            res.drops.use(tracer.drop_reason_values)
        if args.stack:
            len(res.kallsyms)  # load /proc/kallsyms now, not while the first drop is waiting
        if args.verbose:
            print(f"netbee: program cache: {tracer.cache_status}; relocated code cache: "
                  f"{tracer.prepared_status}; background: {tracer.background_status}", file=err)
        print(start_line(report), file=err, flush=True)
        gc.enable()   # (main() disabled it for the start)
        tracer.start_background()
        if not args.json:
            print(renderer.header(), file=out, flush=True)
        shown = _show(tracer, renderer, out, flag, args.count, ringbuf)
        if res.drops.error:
            print(f"netbee: drop reasons shown as numbers: {res.drops.error}", file=err)
        if args.verbose and tracer.background_status != "none":
            print(f"netbee: background load: {tracer.background_status}", file=err)
        print(summary_line(shown, tracer.counters()), file=err, flush=True)   # the last line, always
    except BrokenPipeError:
        # The reader went away (| head): stop quietly, keep Python from complaining at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
    finally:
        tracer.close()
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    # before anything imports construct or pyelftools (and before the object's reader forks)
    from netbee.loader import deferred_imports
    deferred_imports.defer()
    # No cycle collection until `tracing`: a start allocates enough to run it ~40 times in this
    # process (~4 ms) and more in the object's reader (forked with it off), and the start's
    # garbage is nearly all freed by reference counting. Turned back on once the trace runs.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _main(argv)
    finally:
        if collecting:
            gc.enable()


def _main(argv: Optional[Sequence[str]]) -> int:
    verbose = False
    try:
        args = build_parser().parse_args(argv)
        verbose = args.verbose
        return run(args, sys.stdout, sys.stderr)
    except NetBeeError as e:
        text = str(e) if verbose else str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"netbee: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    except Exception as e:  # a bug: one line unless -v asks for the traceback
        if verbose:
            import traceback
            traceback.print_exc()
        print(f"netbee: internal error: {type(e).__name__}: {e} (run with -v for details)"
              .replace("\n", " "), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
