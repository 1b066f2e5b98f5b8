"""The relocated code cache on this kernel: a first run of a new filter loads the programs an
earlier run relocated, with the new filter compiled in, and they are the programs a fresh load
makes (the kernel's own tag of each program's instructions) and behave like them.

Traffic: UDP datagrams on loopback in the initial namespace, to ports the filters select.
"""
from __future__ import annotations

import json
import os
import socket
import time

import pytest

from netbee import prepcache
from netbee.filter import compile_filter
from netbee.loader.collection import Collection
from netbee.loader.elf import ObjectSpec
from netbee.loader.prepared import PreparedObject
from netbee.tracer import TraceOptions, Tracer, default_object_path

pytestmark = [pytest.mark.kernel, pytest.mark.backend("tracepoint")]

PORT_A = 46000 + os.getpid() % 1000
PORT_B = PORT_A + 1000


@pytest.fixture
def cache(tmp_path):
    return prepcache.PreparedCache(str(tmp_path / "prepared"), max_entries=2)


def _opts(cache, port: int, **kw) -> TraceOptions:
    return TraceOptions(backend="tracepoint", rules=compile_filter(f"udp and dst port {port}"),
                        prepared_cache=cache, **kw)


def _send(port: int, n: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(n):
            s.sendto(b"netbee-prepared-%d" % i, ("127.0.0.1", port))


def _drain(tr: Tracer, settle: float = 0.3) -> list:
    out, deadline = [], time.monotonic() + settle
    while time.monotonic() < deadline:
        out += tr.read_events(0.05)
    return out


def _tags(tr: Tracer) -> dict:
    out = {}
    for name, prog in tr._coll.programs.items():
        info = prog.info()
        out[name] = (bytes(info.tag), info.xlated_prog_len, info.nr_func_info, info.nr_line_info)
    return out


def test_a_new_filter_loads_the_relocated_code_with_its_own_filter(cache):
    with Tracer(_opts(cache, PORT_A)) as a:
        a.start()
        assert a.prepared_status == "miss, stored"
    assert len(cache.keys()) == 1
    with Tracer(_opts(cache, PORT_B)) as b:
        rep = b.start()
        assert b.prepared_status == "hit"
        assert "kernel_btf" not in rep.timings and "object_parse" not in rep.timings
        _send(PORT_A, 3)
        _send(PORT_B, 2)
        events = _drain(b)
        hit_tags, hit_drops = _tags(b), b.drop_reason_values
    rx = [e for e in events if e.func == "netif_receive_skb"]
    assert len(rx) == 2 and {e.dport for e in events} == {PORT_B}
    # the same filter loaded the slow way: the same instructions in every program
    with Tracer(_opts(None, PORT_B)) as fresh:
        fresh.start()
        assert fresh.prepared_status == "off"
        assert _tags(fresh) == hit_tags
        assert fresh.drop_reason_values == hit_drops and hit_drops


def test_the_object_is_read_ahead_in_a_child_only_when_nothing_prepared_fits(cache):
    # the first run on a kernel parses the object, read ahead in a child as without the caches;
    # a run that finds an entry (a new filter, a reboot) starts no child
    with Tracer(_opts(cache, PORT_A)) as a:
        rep = a.start()
        assert a.prepared_status == "miss, stored" and "object_fork" in rep.timings
    with Tracer(_opts(cache, PORT_B)) as b:
        rep = b.start()
        assert b.prepared_status == "hit" and "object_fork" not in rep.timings


def test_the_interpreter_and_the_generated_filter_have_their_own_entries(cache):
    for interp in (False, True):
        with Tracer(_opts(cache, PORT_A, filter_interpreter=interp)) as tr:
            tr.start()
            assert tr.prepared_status == "miss, stored"
    with Tracer(_opts(cache, PORT_B, filter_interpreter=True)) as tr:
        tr.start()
        assert tr.prepared_status == "hit"
        _send(PORT_A, 2)
        _send(PORT_B, 1)
        assert {e.dport for e in _drain(tr)} == {PORT_B}


def test_a_damaged_entry_is_a_miss_and_is_replaced(cache):
    with Tracer(_opts(cache, PORT_A)) as tr:
        tr.start()
    (key,) = cache.keys()
    path = cache.path(key)
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x20]))
    with Tracer(_opts(cache, PORT_B)) as tr:
        tr.start()
        assert tr.prepared_status == "miss, stored"
        _send(PORT_B, 1)
        assert [e.dport for e in _drain(tr) if e.func == "netif_receive_skb"] == [PORT_B]
    with Tracer(_opts(cache, PORT_A)) as tr:
        tr.start()
        assert tr.prepared_status == "hit"


def test_an_entry_that_checks_out_but_does_not_fit_is_dropped(cache):
    """A well-formed file whose content is wrong for the loader (a plan naming a program the
    entry lacks) is a miss too, not an error."""
    with Tracer(_opts(cache, PORT_A)) as tr:
        tr.start()
    (key,) = cache.keys()
    text = json.loads(open(cache.path(key), "rb").read().partition(b"\n")[2])["parts"]
    value = cache.load(key, text)
    value["plan"][0]["prog"] = "no_such_program"
    cache.store(key, text, value)
    with Tracer(_opts(cache, PORT_B)) as tr:
        tr.start()
        assert tr.prepared_status.startswith("miss (dropped an unusable entry")
        assert tr.prepared_status.endswith(", stored")
        assert tr.report.attached


def test_prepared_object_round_trip_loads_the_same_programs():
    """Collection.prepared_object() -> to_doc -> JSON -> from_doc -> Collection: the kernel sees
    the same instructions, func and line records."""
    from netbee.loader.btf import Btf

    names = ["tp_netif_receive_skb", "nf_entry"]
    spec = ObjectSpec.from_path(default_object_path(), programs=names)
    with Collection(spec, kernel_btf=Btf.load_kernel(), programs=names) as first:
        doc = json.loads(json.dumps(first.prepared_object().to_doc()))
        want = {n: (bytes(p.info().tag), p.info().nr_line_info) for n, p in first.programs.items()}
    again = PreparedObject.from_doc(doc)
    assert again.to_doc() == doc
    with Collection(again, programs=names) as second:
        assert {n: (bytes(p.info().tag), p.info().nr_line_info) for n, p in second.programs.items()} == want
        assert all(n for _t, n in want.values())


def test_an_entry_the_kernel_refuses_is_dropped_and_the_slow_way_decides(cache):
    """Programs the verifier refuses (each starts with `exit`, r0 unset) in a well-formed entry:
    the run loads afresh, replaces the entry and traces."""
    import base64

    with Tracer(_opts(cache, PORT_A)) as tr:
        tr.start()
    (key,) = cache.keys()
    text = json.loads(open(cache.path(key), "rb").read().partition(b"\n")[2])["parts"]
    value = cache.load(key, text)
    for p in value["object"]["programs"]:
        code = base64.b64decode(p["insns"])
        p["insns"] = base64.b64encode(bytes([0x95]) + bytes(7) + code[8:]).decode()
    cache.store(key, text, value)
    with Tracer(_opts(cache, PORT_B)) as tr:
        rep = tr.start()
        assert tr.prepared_status.startswith("miss (dropped an entry the kernel refused"), tr.prepared_status
        assert tr.prepared_status.endswith(", stored") and not rep.skipped
        _send(PORT_B, 1)
        assert [e.dport for e in _drain(tr) if e.func == "netif_receive_skb"] == [PORT_B]
    with Tracer(_opts(cache, PORT_A)) as tr:
        tr.start()
        assert tr.prepared_status == "hit"


def test_the_backend_probe_needs_no_kernel_btf_once_the_cache_knows_the_kernel(cache):
    """backend auto tries fentry on a function of the kernel BTF, whose id costs a parse of the
    whole BTF: the first start keeps the ids beside the entries; a later process (a reboot's first
    run) probes with them and, the relocated code being cached too, never reads the kernel BTF."""
    import subprocess
    import sys

    from netbee import progcache
    from netbee.loader import features
    from netbee.loader.btf import Btf, BtfKind

    with Tracer(_opts(cache, PORT_A).replace(backend="auto")) as tr:
        backend = tr.start().backend
    key, text = progcache.make_key({"kernel facts": prepcache.kernel_identity()})
    ids = cache.load_facts(key, text)["btf_func_ids"]
    kbtf = Btf.load_kernel()
    assert ids and all(tid == (kbtf.find(name, BtfKind.FUNC) or [None])[0] for name, tid in ids.items())
    assert next(n for n in features.ATTACH_CANDIDATES if ids.get(n)) in ids
    del kbtf
    script = f"""
import sys
from netbee.loader import features
from netbee.loader.btf import Btf
def refuse(*a, **k):
    raise SystemExit("parsed the kernel BTF")
Btf.load_kernel = classmethod(refuse)
features._kernel_btf = refuse
from netbee import prepcache
from netbee.filter import compile_filter
from netbee.tracer import TraceOptions, Tracer
tr = Tracer(TraceOptions(backend="auto", rules=compile_filter("udp and dst port {PORT_B}"),
                         prepared_cache=prepcache.PreparedCache({cache.directory!r}, max_entries=2)))
rep = tr.start()
print(rep.backend, tr.prepared_status, features.has("fentry")[1])
tr.close()
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout
    got_backend, status, _why = out.stdout.split(" ", 2)
    assert (got_backend, status) == (backend, "hit"), out.stdout
