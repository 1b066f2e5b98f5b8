"""netbee.netns resolution and watching, on fake /var/run/netns directories (no root needed)."""
from __future__ import annotations

import os

import pytest

from netbee import netns
from netbee.loader.errors import UsageError

SELF_INO = os.stat("/proc/self/ns/net").st_ino


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "netns"
    d.mkdir()
    return d


def test_current_is_this_process():
    cur = netns.current()
    assert cur.inode == SELF_INO
    assert os.stat(cur.path).st_ino == SELF_INO


def test_resolve_none_is_current():
    assert netns.resolve(None) == [netns.current()]
    assert netns.resolve([]) == [netns.current()]


def test_resolve_path():
    ns = netns.resolve_one("/proc/self/ns/net")
    assert ns.inode == SELF_INO and ns.path == "/proc/self/ns/net"


def test_resolve_name_via_run_dir(run_dir):
    os.symlink("/proc/self/ns/net", run_dir / "blue")
    ns = netns.resolve_one("blue", str(run_dir))
    assert (ns.name, ns.inode) == ("blue", SELF_INO)


def test_unknown_name_is_usage_error(run_dir):
    with pytest.raises(UsageError, match="no network namespace 'nope'"):
        netns.resolve_one("nope", str(run_dir))


def test_regular_file_is_not_a_namespace(tmp_path):
    f = tmp_path / "plain"
    f.write_text("x")
    with pytest.raises(UsageError, match="not a network namespace file"):
        netns.resolve_one(str(f))


def test_unmounted_placeholder_is_ignored(run_dir):
    # `ip netns add` creates an empty file before bind-mounting: not a namespace yet.
    (run_dir / "half").write_text("")
    os.symlink("/proc/self/ns/net", run_dir / "whole")
    assert [ns.name for ns in netns.named(str(run_dir))] == ["whole"]


def test_all_deduplicates_by_inode(run_dir):
    os.symlink("/proc/self/ns/net", run_dir / "a")
    os.symlink("/proc/self/ns/net", run_dir / "b")
    found = netns.resolve(["all"], str(run_dir))
    inodes = [ns.inode for ns in found]
    assert len(inodes) == len(set(inodes))
    assert found[0] == netns.current()
    # Every process namespace on the machine that we may stat shows up.
    assert set(inodes) >= {ns.inode for ns in netns.of_processes()}


def test_all_combined_with_name_does_not_duplicate(run_dir):
    os.symlink("/proc/self/ns/net", run_dir / "a")
    found = netns.resolve(["a", "all"], str(run_dir))
    assert [ns.inode for ns in found].count(SELF_INO) == 1


def test_of_processes_on_fake_proc(tmp_path):
    for pid in (7, 3, 12):
        (tmp_path / str(pid) / "ns").mkdir(parents=True)
        os.symlink("/proc/self/ns/net", tmp_path / str(pid) / "ns" / "net")
    (tmp_path / "self").mkdir()
    found = netns.of_processes(str(tmp_path))
    assert [(ns.name, ns.inode) for ns in found] == [("pid:3", SELF_INO)]


def test_watcher_reports_removed_and_added(run_dir):
    link = run_dir / "red"
    os.symlink("/proc/self/ns/net", link)
    w = netns.NetnsWatcher(["red"], interval=0.5, run_dir=str(run_dir))
    assert list(w.current) == [SELF_INO]
    assert w.poll(now=10.0) == ([], [])
    link.unlink()
    # Rate limited: a poll within the interval does not even look.
    assert w.poll(now=10.1) == ([], [])
    added, removed = w.poll(now=10.6)
    assert added == [] and [ns.name for ns in removed] == ["red"]
    assert w.current == {}
    os.symlink("/proc/self/ns/net", link)
    added, removed = w.poll(now=11.2)
    assert [ns.name for ns in added] == ["red"] and removed == []


def test_watcher_without_specs_never_changes():
    w = netns.NetnsWatcher(None)
    assert w.poll(now=1e9) == ([], [])
    assert list(w.current) == [SELF_INO]
