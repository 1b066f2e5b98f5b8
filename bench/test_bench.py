"""Checks of the benchmark machinery itself: python3 -m pytest bench/test_bench.py (root for the kernel ones)."""
from __future__ import annotations

import os

import pytest

from bench import bpfstats, configs, report
from netbee.cli import summary_line
from netbee.tracer import Counters


def test_parse_summary_reads_netbees_own_summary_line() -> None:
    line = summary_line(1234567, Counters(filtered=89, lost=4321, per_hook={"netif_rx": 5, "netfilter": 9}))
    assert configs.parse_summary(["netbee: tracing with ...", line]) == {
        "shown": 1234567, "filtered": 89, "lost": 4321}


def test_parse_summary_without_summary_is_empty() -> None:
    assert configs.parse_summary(["netbee: tracing with the tracepoint backend; attached: netif_rx"]) == {}


def test_table_and_median() -> None:
    assert report.median([3.0, 1.0, 2.0, 100.0]) == 2.5
    with pytest.raises(ValueError):
        report.median([])
    t = report.table(["a", "b"], [[1, "x"], [2, "y"]]).splitlines()
    assert t == ["| a | b |", "|---|---|", "| 1 | x |", "| 2 | y |"]


def test_stats_delta_counts_only_the_interval() -> None:
    before = {7: bpfstats.ProgStat(7, "p", 1000, 10)}
    after = {7: bpfstats.ProgStat(7, "p", 4000, 40), 8: bpfstats.ProgStat(8, "q", 50, 1)}
    d = bpfstats.delta(before, after)
    assert (d[7].run_time_ns, d[7].run_cnt) == (3000, 30)
    assert (d[8].run_time_ns, d[8].run_cnt) == (50, 1)



@pytest.mark.kernel
def test_udpblast_delivers_every_packet_at_a_low_rate() -> None:
    assert os.geteuid() == 0, "needs root (network namespaces)"
    from bench import traffic
    from bench.lab import Pair

    with Pair() as pair:
        res = traffic.udp_trial(pair, 0.5, rate=2000)
    assert 800 <= res["sent"] <= 1100
    assert res["received"] == res["sent"]
    assert res["cpu_ns_per_packet"] > 0


@pytest.mark.kernel
def test_floor_attaches_with_netbees_loader_and_its_programs_run() -> None:
    assert os.geteuid() == 0, "needs root (BPF)"
    from bench import traffic
    from bench.floor import Floor
    from bench.lab import Pair

    with Pair() as pair, Floor([pair.tx, pair.rx]) as fl, bpfstats.StatsOn():
        assert len(fl.links) == len(fl.tracepoints) + 2 * 2 * 5 * 2
        before = bpfstats.snapshot(os.getpid())
        res = traffic.udp_trial(pair, 0.3, rate=1000)
        after = bpfstats.snapshot(os.getpid())
    runs = {s.name: s.run_cnt for s in bpfstats.delta(before, after).values()}
    # Each UDP packet crosses 4 netfilter hooks, each with an entry and an exit link.
    assert runs["floor_nf"] >= 8 * res["received"]
    assert runs["floor_net_dev_q"] >= res["received"]


def test_replay_ring_image_gives_back_the_records() -> None:
    """bench.userspace_replay lays records out as the kernel does: the cursor reads them back."""
    from bench.userspace_replay import _ReplayReader, ring_image
    recs = [bytes([i]) * 184 for i in range(5)] + [b"s" * 200] + [bytes([9]) * 184] * 3
    reader = _ReplayReader(ring_image(recs))
    got = []
    while True:
        batch = reader.read_block(limit=4)
        if not batch:
            break
        got += list(batch)
    assert got == recs
    reader.rewind()
    assert reader.read(limit=100) == recs


def test_startup_ratios_pair_the_rounds() -> None:
    from bench.startup import per_round_ratios

    # a machine twice as slow in round 2 moves both tools: the per-round ratio does not move
    assert per_round_ratios([0.10, 0.20, 0.12], [0.10, 0.20, 0.10]) == [1.0, 1.0, pytest.approx(1.2)]
    assert per_round_ratios([0.1, 0.2], [0.1]) == [1.0]
