"""netbee.nft_listing: `nft -j list chains` run ahead; anything but a clean exit gives None
(the tracer then lists the chains itself and reports why), and nothing is left running."""
from __future__ import annotations

import os
import time

import pytest

from netbee.nft_listing import ChainListing

CHAINS = '{"nftables": [{"chain": {"family": "ip", "table": "t", "name": "c", "hook": "input", "prio": 5}}]}'


@pytest.fixture
def fake_nft(tmp_path, monkeypatch):
    """Put an `nft` shell script with this body first on PATH."""
    def make(body: str) -> None:
        script = tmp_path / "nft"
        script.write_text("#!/bin/sh\n" + body + "\n")
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}/usr/bin{os.pathsep}/bin")
    return make


def gone(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_output_of_a_clean_exit(fake_nft):
    fake_nft(f"[ \"$*\" = '-j list chains' ] || exit 3\necho '{CHAINS}'")
    listing = ChainListing.start()
    assert listing is not None and listing.inode == os.stat("/proc/self/ns/net").st_ino
    pid = listing._pid
    assert listing.output() == CHAINS + "\n"
    assert gone(pid) and listing._fd < 0
    assert listing.output() is None   # taken once
    listing.close()


def test_a_failed_listing_gives_none(fake_nft):
    fake_nft(f"echo '{CHAINS}'\necho 'Operation not permitted' >&2\nexit 1")
    listing = ChainListing.start()
    pid = listing._pid
    assert listing.output() is None and gone(pid)


def test_a_hanging_nft_is_killed(fake_nft):
    fake_nft("exec sleep 30")
    listing = ChainListing.start()
    pid = listing._pid
    t = time.monotonic()
    assert listing.output(timeout=0.2) is None
    assert time.monotonic() - t < 5 and gone(pid)


def test_close_stops_a_running_listing(fake_nft):
    fake_nft("exec sleep 30")
    listing = ChainListing.start()
    pid = listing._pid
    listing.close()
    listing.close()   # idempotent
    assert gone(pid)


def test_no_nft_no_listing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert ChainListing.start() is None


def test_a_namespace_that_cannot_be_entered_gives_none(fake_nft):
    from netbee.netns import Netns

    fake_nft("echo '{}'")
    assert ChainListing.start(Netns("gone", "/nonexistent/ns", 12345)) is None
