"""The object read ahead in a forked child (netbee/loader/background_parse.py): the same spec
as a parse here, the same errors, and a parse here whenever the child fails to deliver."""
from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import pytest

from netbee import filter_codegen
from netbee.filter import compile_filter
from netbee.loader import background_parse, elf
from netbee.loader.background_parse import BackgroundParse
from netbee.loader.btf import KERNEL_BTF_PATH, Btf
from netbee.loader.elf import ObjectSpec
from netbee.loader.errors import ObjectFileError

ROOT = Path(__file__).resolve().parents[2]
NETBEE = str(ROOT / "bpf/prebuilt/netbee.bpf.o")
PROGRAMS = {"nf_entry", "tp_netif_receive_skb", "tp_kfree_skb", "kp_ip_rcv"}


def _replace() -> dict:
    return {filter_codegen.FUNCTION: filter_codegen.compile_rules(compile_filter("host 10.0.0.7 and tcp port 80"))}


def _same(a: ObjectSpec, b: ObjectSpec) -> None:
    assert sorted(a.programs) == sorted(b.programs)
    for name, p in a.programs.items():
        q = b.programs[name]
        assert bytes(p.insns) == bytes(q.insns), name
        assert (p.map_relocs, p.func_info, p.core_relos, p.kfunc_calls, p.replaced_at, p.subprograms) == \
               (q.map_relocs, q.func_info, q.core_relos, q.kfunc_calls, q.replaced_at, q.subprograms), name
        assert list(p.line_info) == list(q.line_info), name
    assert a.maps == b.maps and a.globals == b.globals and a.replaced == b.replaced
    assert a.btf.to_bytes() == b.btf.to_bytes()


def _no_child_left(parse: BackgroundParse, pid: int) -> None:
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_the_child_parses_what_a_parse_here_gives():
    parse = BackgroundParse(NETBEE)
    pid = parse._pid
    assert parse.forked and pid
    parse.request(PROGRAMS, _replace())
    got = parse.result()
    _same(got, ObjectSpec.from_path(NETBEE, programs=PROGRAMS, replace=_replace()))
    assert got.replaced == {filter_codegen.FUNCTION}
    assert got.btf_ext is None   # not sent: the linked programs carry their own records
    _no_child_left(parse, pid)
    # and the kernel's strings searched for the object's look-ups, as a search here finds them
    names, prefixes = elf.UnlinkedObject.from_path(NETBEE).kernel_lookups()
    assert parse.kernel_strings == Btf.search_kernel_strings(KERNEL_BTF_PATH, Btf.lookup_patterns(names, prefixes))
    assert parse.kernel_strings[1][b"sk_buff\0"]


def test_the_strings_come_first_without_waiting_for_the_request():
    """The child sends its kernel string positions as soon as it has them, before it is told
    what to link: kernel_strings_now() has them then (without blocking before)."""
    names, prefixes = elf.UnlinkedObject.from_path(NETBEE).kernel_lookups()
    expected = Btf.search_kernel_strings(KERNEL_BTF_PATH, Btf.lookup_patterns(names, prefixes))
    parse = BackgroundParse(NETBEE)
    t0 = time.monotonic()
    assert parse.kernel_strings_now() is None   # a child ~30 ms from its answer: not waited for
    assert time.monotonic() - t0 < 0.01
    deadline = time.monotonic() + 10
    while parse.kernel_strings_now() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert parse.kernel_strings == expected
    parse.request(PROGRAMS)
    _same(parse.result(), ObjectSpec.from_path(NETBEE, programs=PROGRAMS))
    assert parse.kernel_strings == expected


def test_bad_strings_from_the_child_mean_a_parse_here(monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(Btf, "search_kernel_strings", classmethod(lambda cls, path, patterns: ("key", "not positions")))
        parse = BackgroundParse(NETBEE)
    pid = parse._pid
    parse.request(PROGRAMS)
    _same(parse.result(), ObjectSpec.from_path(NETBEE, programs=PROGRAMS))
    assert parse.kernel_strings is None
    _no_child_left(parse, pid)


def test_a_malformed_object_fails_as_it_would_here(tmp_path):
    bad = tmp_path / "bad.o"
    data = bytearray(Path(NETBEE).read_bytes())
    data[0x3C:0x3E] = (0xFFFF).to_bytes(2, "little")   # e_shstrndx: no such section
    bad.write_bytes(bytes(data))
    with pytest.raises(ObjectFileError) as here:
        ObjectSpec.from_path(str(bad), programs=PROGRAMS)
    parse = BackgroundParse(str(bad))
    assert parse.forked
    parse.request(PROGRAMS)
    with pytest.raises(ObjectFileError) as there:
        parse.result()
    assert str(there.value) == str(here.value) and parse.kernel_strings is None


def test_a_missing_object_is_named(tmp_path):
    parse = BackgroundParse(str(tmp_path / "absent.o"))
    parse.request(PROGRAMS)
    with pytest.raises(ObjectFileError, match="cannot read BPF object .*absent.o"):
        parse.result()


def test_a_child_that_dies_is_replaced_by_a_parse_here():
    parse = BackgroundParse(NETBEE)
    os.kill(parse._pid, 9)
    parse.request(PROGRAMS)
    _same(parse.result(), ObjectSpec.from_path(NETBEE, programs=PROGRAMS))


def test_a_child_that_hangs_is_given_up(monkeypatch):
    monkeypatch.setattr(background_parse, "CHILD_TIMEOUT", 0.3)

    def hang(cls, path):
        time.sleep(60)

    with monkeypatch.context() as m:
        m.setattr(elf.UnlinkedObject, "from_path", classmethod(hang))   # the child's copy hangs
        parse = BackgroundParse(NETBEE)
    pid = parse._pid
    parse.request(PROGRAMS)
    t0 = time.monotonic()
    _same(parse.result(), ObjectSpec.from_path(NETBEE, programs=PROGRAMS))
    assert time.monotonic() - t0 < 5
    _no_child_left(parse, pid)


def test_an_answer_that_is_not_a_spec_is_not_trusted(monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(elf.UnlinkedObject, "link", lambda self, programs, replace: "not a spec")
        parse = BackgroundParse(NETBEE)
    parse.request(PROGRAMS)
    _same(parse.result(), ObjectSpec.from_path(NETBEE, programs=PROGRAMS))


def test_no_fork_means_a_parse_here(monkeypatch):
    def refuse():
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", refuse)
    parse = BackgroundParse(NETBEE)
    assert not parse.forked
    parse.request(PROGRAMS)
    _same(parse.result(), ObjectSpec.from_path(NETBEE, programs=PROGRAMS))


def test_a_parse_not_wanted_after_all_leaves_no_child():
    parse = BackgroundParse(NETBEE)
    pid = parse._pid
    parse.close()
    parse.close()
    _no_child_left(parse, pid)


def test_the_spec_survives_pickling():
    spec = ObjectSpec.from_path(NETBEE, programs=PROGRAMS)
    _same(pickle.loads(pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)), spec)


def _allowed_cpus(pid: int) -> set:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Cpus_allowed_list:"):
                out = set()
                for part in line.split(":", 1)[1].strip().split(","):
                    lo, _, hi = part.partition("-")
                    out.update(range(int(lo), int(hi or lo) + 1))
                return out
    raise AssertionError("no Cpus_allowed_list")


def test_the_child_works_off_the_parents_cpu():
    mine = os.sched_getaffinity(0)
    parse = BackgroundParse(NETBEE)
    try:
        if len(mine) < 2:
            assert not parse.forked   # (test_one_cpu_means_a_parse_here)
            return
        deadline = time.monotonic() + 2
        while _allowed_cpus(parse._pid) == mine and time.monotonic() < deadline:
            time.sleep(0.01)
        theirs = _allowed_cpus(parse._pid)
        assert theirs < mine and len(theirs) == len(mine) - 1
    finally:
        parse.close()


def test_one_cpu_means_a_parse_here():
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(mine)})
    try:
        parse = BackgroundParse(NETBEE)
    finally:
        os.sched_setaffinity(0, mine)
    assert not parse.forked
    parse.request(PROGRAMS)
    _same(parse.result(), ObjectSpec.from_path(NETBEE, programs=PROGRAMS))


def test_only_the_main_thread_forks():
    """A fork from another thread may copy a lock the main thread holds (an import's) into a
    child that then waits for it forever: such a parse runs in the calling thread."""
    import threading

    got = {}

    def in_thread():
        parse = BackgroundParse(NETBEE)
        got["forked"] = parse.forked
        parse.request(PROGRAMS, _replace())
        got["spec"] = parse.result()

    t = threading.Thread(target=in_thread)
    t.start()
    t.join(60)
    assert got["forked"] is False
    _same(got["spec"], ObjectSpec.from_path(NETBEE, programs=PROGRAMS, replace=_replace()))


def test_a_wedged_child_does_not_hold_the_commands_output():
    """The child lets go of stdin/stdout/stderr at once: a reader of a command's output sees
    it end when the command ends, even while a child is still busy (here: made to hang)."""
    import subprocess
    import sys
    import time

    code = (
        "import os, sys, time\n"
        "from netbee.loader import background_parse, elf\n"
        "def hang(*a, **k):\n"
        "    time.sleep(25)\n"
        "elf.UnlinkedObject.from_path = staticmethod(hang)\n"
        f"p = background_parse.BackgroundParse({NETBEE!r})\n"
        "print('forked' if p.forked else 'not forked', flush=True)\n"
        "os._exit(0)\n"   # no close(): the child is left running
    )
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=40)
    assert out.stdout.strip() == "forked", out.stderr
    assert time.monotonic() - t0 < 10, "the command's output stayed open while its child ran"
