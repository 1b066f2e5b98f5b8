"""cli.py without a kernel: parsing, one-line errors with exit 2, lifecycle with a fake tracer."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import types

import pytest

from netbee import cli
from netbee.loader.errors import AttachError, UsageError
from netbee.hooks import FUNC_NAMES
from tests.unit.test_decode import raw_event

HOOK_IDS = {name: hook for hook, name in FUNC_NAMES.items()}


def record(func: str = "ip_rcv", **fields) -> bytes:
    """A raw ring buffer record of an event at this hook: what Tracer.read_records returns."""
    return raw_event(hook=HOOK_IDS[func], **fields)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "netbee", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60, env=env)


@pytest.mark.parametrize("args,message", [
    (["-H", "300.1.1.1"], "netbee: bad host '300.1.1.1'"),
    (["-P", "70000"], "netbee: bad port '70000': must be 0-65535"),
    (["-p", "foo"], "netbee: bad protocol 'foo'"),
    (["host and"], "netbee: bad filter: expected an address after 'host'"),
    (["host", "and"], "netbee: bad filter: expected an address after 'host'"),
    (["--src-port", "1-99999"], "netbee: bad port '99999'"),
    (["--bogus"], "netbee: unrecognized arguments: --bogus"),
    (["--backend", "magic"], "netbee: argument --backend: invalid choice"),
    (["-c", "0"], "netbee: bad --count 0"),
    (["--ringbuf-size", "3000"], "netbee: bad --ringbuf-size '3000'"),
    (["--oui-db", "/nonexistent/oui.db"], "netbee: cannot read OUI database"),
])
def test_bad_input_one_line_exit_2(args, message):
    res = run_cli(*args)
    assert res.returncode == 2, res
    assert res.stderr.startswith(message), res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert res.stdout == ""


def test_unknown_interface_exit_2():
    res = run_cli("-i", "nosuchif0")
    assert res.returncode == 2 and res.stderr == "netbee: no interface 'nosuchif0'\n"


def test_version_and_help():
    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("netbee ")
    res = run_cli("--help")
    assert res.returncode == 0
    for text in ("why is my packet dropped", "does my firewall rule match",
                 "follow a TCP handshake", "--stack", "--json", "--netns", "--probe"):
        assert text in res.stdout, text


def test_help_fits_the_terminal_and_parsing_needs_no_shutil():
    """The help is as wide as COLUMNS (as argparse's own formatter makes it), without the
    import of shutil argparse would make for each option of every start."""
    for columns in (60, 120):
        res = run_cli("--help", env={**os.environ, "COLUMNS": str(columns)})
        usage = res.stdout.split("\n\n")[0].splitlines()   # wrapped by argparse (the epilog is not)
        widths = [len(line) for line in usage]
        assert res.returncode == 0 and max(widths) <= columns
        assert max(widths) > columns - 20, (columns, max(widths))
    code = "import sys\nfrom netbee import cli\ncli.build_parser().parse_args(['-p', 'icmp'])\nprint('shutil' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_privileges_from_capeff():
    def status(caps):
        return f"Name:\tx\nCapEff:\t{caps:016x}\n"
    assert cli.has_privileges(status(1 << 21))
    assert cli.has_privileges(status((1 << 38) | (1 << 39)))
    assert not cli.has_privileges(status(1 << 39))
    assert not cli.has_privileges(status(0))


def test_not_root_is_refused_before_the_kernel():
    res = subprocess.run(["setpriv", "--inh-caps=-all", "--bounding-set=-all", sys.executable,
                          "-m", "netbee", "-p", "icmp"], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert res.returncode == 2, res
    assert res.stderr == ("netbee: needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN): "
                          "run it with sudo\n")


def test_parse_size():
    assert cli.parse_size("4M") == 4 << 20 and cli.parse_size("65536") == 65536
    assert cli.parse_size("256k") == 256 << 10
    for bad in ("3000", "x", "1023", "4Q"):
        with pytest.raises(UsageError):
            cli.parse_size(bad)


def test_format_probe():
    assert cli.format_probe("a b\n") == "a b"
    assert cli.format_probe([("tp_btf", True, "5.5+"), ("kprobe", False, "CONFIG_KPROBES off")]) == \
        "tp_btf  yes  5.5+\nkprobe  no   CONFIG_KPROBES off"


class FakeTracer:
    """Stands in for netbee.tracer.Tracer: records options, yields given batches."""

    instances = []
    stop_signal = signal.SIGTERM

    drop_reason_values = None   # as a Tracer that could not read the drop reason enum
    cache_status = "off"
    background_status = "none"
    background_started = False

    def start_background(self):
        """The CLI starts the background load once its `tracing` line is out."""
        self.background_started = True

    def __init__(self, opts, parse_ahead=None, chains_ahead=()):
        self.opts = opts
        self.parse_ahead = parse_ahead
        self.chains_ahead = chains_ahead
        self.closed = False
        self.batches = [list(b) for b in FakeTracer.batches]
        self.reads = []
        FakeTracer.instances.append(self)

    def start(self):
        return types.SimpleNamespace(backend="tracepoint", attached=["ip_rcv", "kfree_skb"],
                                     skipped=[("ip_forward", "no tracepoint")], blind_spots=[],
                                     netns=["current (net:[1])"])

    def read_records(self, timeout=0.1, limit=None):
        """The next batch (its first `limit` events; the rest stay queued); SIGTERM once drained."""
        if not self.batches:
            signal.raise_signal(self.stop_signal)
            return []
        batch = self.batches[0]
        taken, self.batches[0] = batch[:limit], batch[limit:] if limit is not None else []
        if not self.batches[0]:
            self.batches.pop(0)
        self.reads.append((timeout, limit))
        return taken

    def pending(self):
        return bool(self.batches)

    def counters(self):
        return types.SimpleNamespace(filtered=7, submitted=3, lost=0, received=3,
                                     per_hook={"ip_rcv": 2, "kfree_skb": 1})

    def close(self):
        self.closed = True


@pytest.fixture
def fake(monkeypatch):
    import netbee.tracer
    monkeypatch.setattr(netbee.tracer, "Tracer", FakeTracer)
    monkeypatch.setattr(cli, "check_privileges", lambda: None)
    FakeTracer.instances = []
    FakeTracer.batches = [[record(), record("icmp_rcv")], [record("kfree_skb")]]
    return FakeTracer


def run_main(argv, capsys):
    rc = cli.main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_json_run_with_count_and_lifecycle_lines(fake, capsys):
    rc, out, err = run_main(["--json", "-c", "2", "-p", "icmp", "--stack", "--backend",
                             "tracepoint", "--ringbuf-size", "1M"], capsys)
    assert rc == 0
    lines = out.splitlines()
    assert len(lines) == 2 and [json.loads(x)["func"] for x in lines] == ["ip_rcv", "icmp_rcv"]
    e = err.splitlines()
    assert e[0] == ("netbee: tracing with the tracepoint backend; attached: ip_rcv, kfree_skb; "
                    "skipped: ip_forward (no tracepoint); netfilter in: current (net:[1])")
    assert e[1] == ("netbee: 2 events shown, 7 filtered in the kernel, 0 lost; per hook: "
                    "ip_rcv 2, kfree_skb 1")
    t = fake.instances[0]
    assert t.closed and t.opts.backend == "tracepoint" and t.opts.want_stack
    assert t.opts.ringbuf_bytes == 1 << 20 and [(r.op, r.field) for r in t.opts.rules] == [(0, 1), (4, 0), (0, 2)]
    assert t.background_started and t.opts.any_filter_programs == (t.opts.cache is not None)


def test_no_cache_reads_the_object_ahead_and_lets_the_child_go(fake, capsys):
    """--no-cache parses the object whatever happens: the command forks the child that reads
    it before importing the tracer, hands it over, and reaps it at the end."""
    from netbee.loader.background_parse import BackgroundParse
    from netbee.prebuilt import default_object_path

    rc, _, _ = run_main(["--json", "-c", "1", "--no-cache"], capsys)
    assert rc == 0
    ahead = fake.instances[0].parse_ahead
    assert isinstance(ahead, BackgroundParse) and ahead.forked
    assert ahead.reads(default_object_path(), None) and not ahead.reads(default_object_path(), "/tmp/other")
    assert ahead._pid == 0 and ahead._answer_fd < 0   # reaped, pipes closed
    rc, _, _ = run_main(["--json", "-c", "1"], capsys)
    assert rc == 0 and fake.instances[1].parse_ahead is None   # the caches decide later


def test_nft_chains_are_listed_ahead(fake, capsys, tmp_path, monkeypatch):
    """The command starts `nft -j list chains` of each namespace it names (its own by default)
    first thing, hands the listings to the tracer and reaps them at the end; none for
    `--netns all`."""
    from netbee.nft_listing import ChainListing

    nft = tmp_path / "nft"
    nft.write_text("#!/bin/sh\necho '{\"nftables\": []}'\n")
    nft.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    here = os.stat("/proc/self/ns/net").st_ino
    for argv in ([], ["--netns", "/proc/self/ns/net"]):
        rc, _, _ = run_main(["--json", "-c", "1", *argv], capsys)
        listings = fake.instances[-1].chains_ahead
        assert rc == 0 and [type(c) for c in listings] == [ChainListing], argv
        assert listings[0].inode == here
        assert listings[0]._pid == 0 and listings[0]._fd < 0   # reaped, pipe closed
    rc, _, _ = run_main(["--json", "-c", "1", "--netns", "all"], capsys)
    assert rc == 0 and list(fake.instances[-1].chains_ahead) == []


def test_no_cycle_collection_until_tracing(fake, capsys, monkeypatch):
    """The start runs without the cycle collector; the trace (and whatever called main) with it."""
    import gc

    seen = []
    start = FakeTracer.start

    def start_noting(self):
        seen.append(("start", gc.isenabled()))
        return start(self)

    read = FakeTracer.read_records

    def read_noting(self, *a, **kw):
        seen.append(("read", gc.isenabled()))
        return read(self, *a, **kw)

    monkeypatch.setattr(FakeTracer, "start", start_noting)
    monkeypatch.setattr(FakeTracer, "read_records", read_noting)
    assert gc.isenabled()
    rc, _, _ = run_main(["--json", "-c", "1"], capsys)
    assert rc == 0 and seen[0] == ("start", False) and ("read", True) in seen
    assert gc.isenabled()
    rc, _, _ = run_main(["-H", "300.1.1.1"], capsys)   # an early error: turned back on too
    assert rc == 2 and gc.isenabled()


def test_table_run_until_sigterm(fake, capsys):
    rc, out, err = run_main(["icmp"], capsys)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith("TIME") and len(lines) == 4
    assert "kfree_skb" in lines[3] and "\x1b" not in out
    assert err.splitlines()[-1].startswith("netbee: 3 events shown")
    assert fake.instances[0].closed


def test_netbee_error_from_tracer_is_one_line(fake, capsys, monkeypatch):
    def boom(self):
        raise AttachError("ip_rcv", "EBUSY\nsecond line")
    monkeypatch.setattr(FakeTracer, "start", boom)
    rc, out, err = run_main(["-p", "tcp"], capsys)
    assert rc == 2 and err == "netbee: cannot attach to ip_rcv: EBUSY\n"
    assert fake.instances[0].closed


def test_internal_error_one_line_unless_verbose(fake, capsys, monkeypatch):
    def bug(self):
        raise KeyError("oops")
    monkeypatch.setattr(FakeTracer, "start", bug)
    rc, out, err = run_main([], capsys)
    assert rc == 1 and err.count("\n") == 1 and "internal error: KeyError" in err
    rc, out, err = run_main(["-v"], capsys)
    assert rc == 1 and "Traceback" in err


def test_interface_and_netns_become_filter_terms(fake, capsys):
    from netbee import netns
    rc, out, err = run_main(["--json", "-c", "1", "-i", "lo"], capsys)
    assert rc == 0
    rules = fake.instances[0].opts.rules
    import socket
    assert any(r.field == 9 and r.value == socket.if_nametoindex("lo") for r in rules)
    assert any(r.field == 10 and r.value == netns.current().inode for r in rules)
    rc, out, err = run_main(["-i", "lo", "--netns", "all"], capsys)
    assert rc == 2 and err.startswith("netbee: -i needs a single --netns")


def test_ctrl_c_prints_the_summary(fake, capsys, monkeypatch):
    monkeypatch.setattr(FakeTracer, "stop_signal", signal.SIGINT)
    rc, out, err = run_main(["--json"], capsys)
    assert rc == 0 and len(out.splitlines()) == 3
    assert err.splitlines()[-1].startswith("netbee: 3 events shown, 7 filtered in the kernel")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_events_queued_at_stop_are_shown_and_count_is_exact(fake, capsys, monkeypatch):
    """A stop request shows what the kernel already queued (it counted those as submitted); -c N
    takes exactly N records from the ring buffer, however large its batches."""
    orig = FakeTracer.read_records

    def read_records(self, timeout=0.1, limit=None):
        if len(self.reads) == 1:
            signal.raise_signal(signal.SIGINT)  # arrives while the second batch is queued
        return orig(self, timeout, limit)
    monkeypatch.setattr(FakeTracer, "read_records", read_records)
    FakeTracer.batches = [[record()], [record("icmp_rcv")] * 3, [record("udp_rcv")] * 2]
    rc, out, err = run_main(["--json"], capsys)
    assert rc == 0 and len(out.splitlines()) == 6
    assert fake.instances[0].reads[-1][0] == 0  # the drain does not wait for more
    monkeypatch.setattr(FakeTracer, "read_records", orig)
    FakeTracer.batches = [[record()] * 5, [record()] * 5]
    rc, out, err = run_main(["--json", "-c", "7"], capsys)
    assert rc == 0 and len(out.splitlines()) == 7
    assert [limit for _, limit in fake.instances[-1].reads] == [7, 2]


def test_stop_with_a_count_drains_no_more_than_the_count(fake, capsys, monkeypatch):
    orig = FakeTracer.read_records

    def read_records(self, timeout=0.1, limit=None):
        if len(self.reads) == 1:
            signal.raise_signal(signal.SIGINT)
        return orig(self, timeout, limit)
    monkeypatch.setattr(FakeTracer, "read_records", read_records)
    FakeTracer.batches = [[record()] * 2, [record()] * 3, [record()] * 4]
    rc, out, err = run_main(["--json", "-c", "7"], capsys)
    assert rc == 0 and len(out.splitlines()) == 7
    assert fake.instances[0].reads[-1] == (0, 2)


def test_packaged_oui_database_loads_after_tracing_starts(fake, capsys, monkeypatch):
    # The packaged vendor database costs ~30 ms to load: not on the way to the "tracing" line.
    from netbee.resolvers import oui
    loads_before_start = []
    real_start = fake.start
    monkeypatch.setattr(fake, "start", lambda self: (
        loads_before_start.append(calls[0]), real_start(self))[1])
    calls = [0]
    real_load = oui.load_db
    monkeypatch.setattr(oui, "load_db", lambda data: (calls.__setitem__(0, calls[0] + 1), real_load(data))[1])
    rc, out, err = run_main(["--json", "-c", "2", "--backend", "tracepoint"], capsys)
    assert rc == 0 and loads_before_start == [0]
    assert calls[0] <= 1  # loaded at most once, when an event with MAC addresses was shown
