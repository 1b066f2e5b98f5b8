"""dist/netbee.pyz: a single file that traces real traffic with an interpreter without site-packages."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from tests import netbee_run, netlab

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pyz") / "netbee.pyz"
    res = subprocess.run(["sh", str(ROOT / "scripts" / "build_pyz.sh"), str(out)], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    return out


def _isolated(pyz: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(netbee_run.pyz_argv(pyz) + list(args), capture_output=True, text=True,
                          cwd=pyz.parent, timeout=60)


def test_isolated_interpreter_really_lacks_dependencies() -> None:
    # Otherwise the tests below would prove nothing about the zipapp carrying its dependencies.
    res = subprocess.run([sys.executable, "-I", "-S", "-c", "import elftools"], capture_output=True)
    assert res.returncode != 0


def test_pyz_version_help_and_usage_error(pyz: Path) -> None:
    from netbee import __version__
    assert _isolated(pyz, "--version").stdout.strip() == f"netbee {__version__}"
    helped = _isolated(pyz, "--help")
    assert helped.returncode == 0 and "usage: netbee" in helped.stdout
    bad = _isolated(pyz, "--no-such-option")
    assert bad.returncode == 2 and bad.stderr.startswith("netbee:")


def test_pyz_runs_directly_as_executable(pyz: Path) -> None:
    res = subprocess.run([str(pyz), "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("netbee ")


def test_pyz_traces_ping_between_namespaces(pyz: Path, two_hosts: netlab.TwoHosts, tmp_path: Path) -> None:
    t = two_hosts
    args = ["--netns", t.server.name, "-p", "icmp", "-H", t.client_ip, "--json"]
    env = {"TMPDIR": str(tmp_path)}

    def requests(events: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        return [e for e in events if e.get("icmp_type") == "echo request"
                and e.get("saddr") == t.client_ip and e.get("daddr") == t.server_ip]

    def replies(events: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        return [e for e in events if e.get("icmp_type") == "echo reply"
                and e.get("saddr") == t.server_ip and e.get("daddr") == t.client_ip]

    with netbee_run.Netbee(netbee_run.pyz_argv(pyz), args, cwd=pyz.parent, env=env) as nb:
        netlab.ping(t.client, t.server_ip, count=2, interval=0.1)
        nb.wait_for(lambda evs: bool(requests(evs) and replies(evs)), timeout=30)
    run = nb.stop()
    assert run.returncode == 0, run.stderr
    assert requests(run.events) and replies(run.events), f"events: {run.events}\nstderr: {run.stderr}"
    # Every event passed the -H filter and came from the watched namespace.
    netns = t.server.inode()
    assert all(e["netns"] == netns for e in run.events)
    assert all(t.client_ip in (e["saddr"], e["daddr"]) for e in run.events)
    assert list(tmp_path.iterdir()) == []  # the private extracted copy is gone
