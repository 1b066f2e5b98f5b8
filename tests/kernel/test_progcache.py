"""The program cache on this kernel: a second start of the same configuration reuses the pinned
programs, resets every per-run state and behaves exactly like a fresh load.

Traffic: UDP datagrams on the loopback device of the initial namespace, to a port the filter
selects, so only the test's own packets count.
"""
from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from typing import Iterator

import pytest

from netbee import progcache
from netbee.filter import compile_filter
from netbee.loader import pinning
from netbee.tracer import TraceOptions, Tracer

pytestmark = [pytest.mark.kernel, pytest.mark.backend("tracepoint")]

PORT = int(os.environ.get("NB_CACHE_TEST_PORT", 47000 + os.getpid() % 1000))  # a child shares it
TX_HOOKS = {"dev_queue_xmit", "net_dev_start_xmit"}


@contextlib.contextmanager
def scratch_cache(tmp_path, name: str, max_entries: int) -> Iterator[progcache.ProgramCache]:
    """A program cache of the test's own (pins under the bpffs root, meta in tmp_path), removed after."""
    c = progcache.ProgramCache(bpf_dir=os.path.join(pinning.BPFFS_ROOT, f"{name}{os.getpid()}"),
                               meta_dir=str(tmp_path / "meta"), max_entries=max_entries)
    try:
        yield c
    finally:
        c.clear()
        pinning.remove_set(c.bpf_dir)


@pytest.fixture
def cache(tmp_path):
    with scratch_cache(tmp_path, "nbtest", 2) as c:
        yield c


def _opts(cache, expr: str = f"udp and port {PORT}") -> TraceOptions:
    return TraceOptions(backend="tracepoint", rules=compile_filter(expr), cache=cache)


def _send(n: int, port: int = PORT) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(n):
            s.sendto(b"netbee-cache-%d" % i, ("127.0.0.1", port))


def _send_from_child(n: int) -> None:
    subprocess.run([sys.executable, "-c", f"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                    f"for i in range({n}): s.sendto(b'x', ('127.0.0.1', {PORT}))"], check=True)


def _drain(tr: Tracer, settle: float = 0.3) -> list:
    out, deadline = [], time.monotonic() + settle
    while time.monotonic() < deadline:
        out += tr.read_events(0.05)
    return out


def _run_once(cache, sender=lambda: _send_from_child(3)):
    with Tracer(_opts(cache)) as tr:
        tr.start()
        sender()
        events = _drain(tr)
        return tr.cache_status, events, tr.counters()


def test_second_start_reuses_the_programs_and_starts_from_fresh_state(cache):
    status1, ev1, c1 = _run_once(cache)
    assert status1.startswith("miss, stored"), status1
    key = progcache.ProgramCache.keys(cache)
    assert len(key) == 1 and os.path.isdir(os.path.join(cache.bpf_dir, key[0]))
    status2, ev2, c2 = _run_once(cache)
    assert status2 == "hit"
    # the same traffic gives the same events and counters: nothing carried over from run 1
    # (counters reset, the ring buffer's old records skipped)
    assert c1.submitted == c1.received == len(ev1) > 0
    # (not seen: it also counts other packets on this machine, every hook sees all traffic)
    assert (c2.submitted, c2.received, c2.lost) == (c1.submitted, c1.received, c1.lost)
    assert sorted(e.func for e in ev2) == sorted(e.func for e in ev1)
    assert {e.dport for e in ev2} == {PORT}


def test_hit_writes_this_processes_pid(cache):
    # The entry is stored by another process: its pid is in the pinned .bss.
    code = (f"import sys; sys.path.insert(0, {os.getcwd()!r})\n"
            "from tests.kernel.test_progcache import _run_once\n"
            "from netbee import progcache\n"
            f"c = progcache.ProgramCache(bpf_dir={cache.bpf_dir!r}, meta_dir={cache.meta_dir!r}, max_entries=2)\n"
            "print(_run_once(c)[0])")
    res = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, check=True,
                         env=dict(os.environ, NB_CACHE_TEST_PORT=str(PORT)))
    assert res.stdout.strip().startswith("miss, stored")
    with Tracer(_opts(cache)) as tr:
        tr.start()
        assert tr.cache_status == "hit"
        _send(3)            # ours: not traced on transmit
        _send_from_child(2)  # another process's: traced
        events = _drain(tr)
    tx = [e for e in events if e.func in TX_HOOKS]
    assert tx and {e.pid for e in tx} != {os.getpid()} and os.getpid() not in {e.pid for e in tx}
    rx = [e for e in events if e.func == "netif_receive_skb"]
    assert len(rx) == 5  # receive side is not filtered by pid: both senders' datagrams


def test_a_running_entry_is_not_shared(cache):
    with Tracer(_opts(cache)) as a:
        a.start()
        with Tracer(_opts(cache)) as b:
            b.start()
            assert b.cache_status.startswith("in use by another netbee")
            _send(2)
            assert len([e for e in _drain(b) if e.func == "netif_receive_skb"]) == 2
        assert len([e for e in _drain(a) if e.func == "netif_receive_skb"]) == 2
    assert len(cache.keys()) == 1


def test_other_filters_get_their_own_entries_and_the_oldest_goes(cache):
    statuses = []
    for port in (PORT, PORT + 1, PORT + 2):
        with Tracer(_opts(cache, f"udp and port {port}")) as tr:
            tr.start()
            statuses.append(tr.cache_status)
        time.sleep(0.01)  # distinct last-use times
    assert statuses[0] == statuses[1] == "miss, stored" and statuses[2] == "miss, stored (evicted 1 old)"
    assert len(cache.keys()) == 2 and len(os.listdir(cache.bpf_dir)) == 2
    with Tracer(_opts(cache, f"udp and port {PORT}")) as tr:  # the evicted one
        tr.start()
        assert tr.cache_status.startswith("miss, stored")


def test_an_entry_whose_pins_are_gone_is_rebuilt(cache):
    _run_once(cache)
    (key,) = cache.keys()
    pinning.remove_set(os.path.join(cache.bpf_dir, key))
    status, events, counters = _run_once(cache)
    assert status.startswith("miss (dropped an unusable entry") and counters.received == len(events) > 0
    status, _, _ = _run_once(cache)
    assert status == "hit"


def test_cli_uses_the_cache_and_clears_it():
    env = dict(os.environ)
    argv = [sys.executable, "-m", "netbee", "-v", "-c", "1", "udp", "and", "port", str(PORT + 7)]

    def run() -> str:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 60
        while p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            _send(1, PORT + 7)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        return err

    subprocess.run([sys.executable, "-m", "netbee", "--clear-cache"], check=True, capture_output=True)
    assert "program cache: miss, stored; relocated code cache: miss, stored" in run()
    assert "program cache: hit; relocated code cache: off" in run()
    res = subprocess.run([sys.executable, "-m", "netbee", "--clear-cache"], capture_output=True, text=True)
    # at least ours (another netbee on this machine may have stored entries too)
    assert res.returncode == 0 and re.search(r"program cache: removed [1-9]\d* entries", res.stderr), res.stderr
    assert re.search(r"relocated code cache: removed [1-9]\d* entries", res.stderr), res.stderr
    assert "program cache: miss, stored; relocated code cache: miss, stored" in run()
    argv[6:6] = ["ip", "and"]   # another filter (same traffic): the relocated code is reused
    assert "program cache: miss, stored; relocated code cache: hit" in run()
    argv.insert(3, "--no-cache")
    assert "program cache: off; relocated code cache: off" in run()
    subprocess.run([sys.executable, "-m", "netbee", "--clear-cache"], check=True, capture_output=True)
