"""Shared pytest configuration: markers, kernel-feature gating, namespace fixtures, the run report.

Markers
  kernel                    needs root and the real kernel; without root the test FAILS.
  requires_kernel(f, ...)   needs kernel features (kprobe, kprobe_multi, fentry, tracefs_kprobe).
                            On a host lacking one, the test is deselected at collection and listed
                            as "run in QEMU guests"; inside a guest (NETBEE_IN_VM=1) a missing
                            feature is a failure.
  backend(name)             which tracer backend the test exercises (for the per-backend report).
  vm                        boots QEMU guests (tests/vm/).
"""
from __future__ import annotations

import json
import os
import platform
import signal
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests import kernel_features, netlab  # noqa: E402

IN_VM = os.environ.get("NETBEE_IN_VM") == "1"
RESULTS_JSON = os.environ.get("NETBEE_RESULTS_JSON")

_DESELECTED = pytest.StashKey[List[Tuple[str, str]]]()
_VM_ROWS = pytest.StashKey[List[Dict[str, object]]]()
_OUTCOMES = pytest.StashKey[Dict[str, Dict[str, str]]]()

MARKERS = (
    "kernel: needs root and a real kernel (loads BPF programs); fails without root",
    "requires_kernel(*features): needs kprobe/kprobe_multi/fentry/tracefs_kprobe; deselected on a host "
    "lacking them (run in QEMU guests by tests/vm), fails inside a guest lacking them",
    "backend(name): tracer backend the test exercises, for the per-backend report",
    "vm: boots Debian kernels under QEMU (tests/vm)",
)


def _kernel_label() -> str:
    return ("guest " if IN_VM else "host ") + platform.release()


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    config.stash[_DESELECTED] = []
    config.stash[_VM_ROWS] = []
    config.stash[_OUTCOMES] = {}
    # A CI timeout sends SIGTERM: turn it into KeyboardInterrupt so finalizers still delete namespaces.
    try:
        signal.signal(signal.SIGTERM, _sigterm)
    except ValueError:  # not the main thread (pytest run in-process by another tool)
        pass


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def required_features(item: pytest.Item) -> List[str]:
    feats: List[str] = []
    for mark in item.iter_markers("requires_kernel"):
        feats.extend(mark.args)
    return feats


def missing_features(item: pytest.Item) -> List[Tuple[str, str]]:
    out = []
    for feat in required_features(item):
        ok, why = kernel_features.check(feat)
        if not ok:
            out.append((feat, why))
    return out


def _not_offered_in_guest(item: pytest.Item) -> List[Tuple[str, str]]:
    series = os.environ.get("NETBEE_VM_SERIES") or kernel_features.guest_series(platform.release())
    expected = kernel_features.GUEST_EXPECTED.get(series or "", ())
    return [(f, f"not offered by Debian {series or platform.release()}")
            for f in required_features(item) if f not in expected]


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        if not required_features(item):
            missing: List[Tuple[str, str]] = []
        elif IN_VM:
            missing = _not_offered_in_guest(item)
        else:
            missing = missing_features(item)
        if missing:
            drop.append(item)
            config.stash[_DESELECTED].append((item.nodeid, ", ".join(f for f, _ in missing)))
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel") or item.get_closest_marker("requires_kernel") \
            or item.get_closest_marker("vm"):
        if os.geteuid() != 0:
            pytest.fail("kernel test needs root (run the suite as root)", pytrace=False)
    missing = missing_features(item)
    if missing:
        pytest.fail("kernel lacks " + "; ".join(f"{f}: {why}" for f, why in missing), pytrace=False)


def backend_of(item: pytest.Item) -> str:
    mark = item.get_closest_marker("backend")
    if mark and mark.args:
        return str(mark.args[0])
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "backend" in callspec.params:
        return str(callspec.params["backend"])
    feats = required_features(item)
    if "fentry" in feats:
        return "fentry"
    if any(f.startswith("kprobe") or f == "tracefs_kprobe" for f in feats):
        return "kprobe"
    return "-"


def _suite_of(item: pytest.Item) -> str:
    try:
        parts = Path(str(item.fspath)).resolve().relative_to(ROOT).parts
    except ValueError:  # a test outside this tree (an inner pytest session of our own tests)
        return "other"
    return parts[1] if len(parts) > 2 and parts[0] == "tests" else "other"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    rep.nb_backend = backend_of(item)  # type: ignore[attr-defined]
    rep.nb_suite = _suite_of(item)  # type: ignore[attr-defined]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # One verdict per test: a failure or skip in any phase wins over the call phase passing.
    config = _config_holder.get("config")
    if config is None:
        return
    if report.when != "call" and report.passed:
        return
    suite = getattr(report, "nb_suite", "other")
    kernel = "-" if suite == "unit" else _kernel_label()
    verdicts = config.stash[_OUTCOMES]
    prev = verdicts.get(report.nodeid)
    if prev is not None and prev["outcome"] != "passed":
        return
    verdicts[report.nodeid] = {"nodeid": report.nodeid, "outcome": report.outcome, "when": report.when,
                               "kernel": f"{kernel} [{suite}]",
                               "backend": getattr(report, "nb_backend", "-")}


def _counts(config: pytest.Config) -> Dict[Tuple[str, str], List[int]]:
    counts: Dict[Tuple[str, str], List[int]] = defaultdict(lambda: [0, 0])
    for v in config.stash[_OUTCOMES].values():
        c = counts[(v["kernel"], v["backend"])]
        c[0] += 1
        c[1] += v["outcome"] == "passed"
    return counts


_config_holder: Dict[str, pytest.Config] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    _config_holder["config"] = session.config
    if os.geteuid() == 0:
        netlab.sweep()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.geteuid() == 0:
        netlab.sweep()
    if RESULTS_JSON:
        cfg = session.config
        data = {"kernel": platform.release(), "exitstatus": int(exitstatus),
                "tests": list(cfg.stash[_OUTCOMES].values()),
                "counts": [{"kernel": k, "backend": b, "run": c[0], "passed": c[1]}
                           for (k, b), c in sorted(_counts(cfg).items())]}
        Path(RESULTS_JSON).write_text(json.dumps(data, indent=1))


def pytest_terminal_summary(terminalreporter: object, exitstatus: int, config: pytest.Config) -> None:
    tr = terminalreporter
    counts = _counts(config)
    rows = [(k, b, c[0], c[1]) for (k, b), c in sorted(counts.items())]
    rows += [(str(r["kernel"]), str(r["backend"]), int(r["run"]), int(r["passed"]))  # type: ignore
             for r in config.stash[_VM_ROWS]]
    if rows:
        tr.write_sep("=", "NetBee tests per kernel and backend")  # type: ignore[attr-defined]
        width = max([len("kernel [suite]")] + [len(r[0]) for r in rows])
        tr.write_line(f"{'kernel [suite]':<{width}}  {'backend':<10} {'run':>5} {'passed':>6}")  # type: ignore
        for kernel, backend, run, passed in rows:
            flag = "" if run == passed else "   <-- FAILURES"
            tr.write_line(f"{kernel:<{width}}  {backend:<10} {run:>5} {passed:>6}{flag}")  # type: ignore
    deselected = config.stash[_DESELECTED]
    if deselected:
        where = ("(feature not offered by this guest kernel)" if IN_VM else
                 "run in QEMU guests (tests/vm/test_vm_kernels.py)")
        tr.write_sep("-", f"{len(deselected)} tests deselected here, {where}")  # type: ignore
        for nodeid, feats in deselected:
            tr.write_line(f"  {nodeid}  (lacks {feats})")  # type: ignore[attr-defined]


# ---------------------------------------------------------------- fixtures

@pytest.fixture
def vm_report(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Callable the QEMU runner uses to add guest rows to the end-of-run report."""
    def add(kernel: str, backend: str, run: int, passed: int) -> None:
        request.config.stash[_VM_ROWS].append({"kernel": kernel, "backend": backend,
                                               "run": run, "passed": passed})
    return add


@pytest.fixture
def netns() -> Iterator[object]:
    """Factory: netns("role") -> a created netlab.Netns, deleted after the test."""
    made: List[netlab.Netns] = []

    def make(role: str = "ns") -> netlab.Netns:
        ns = netlab.Netns(netlab.unique_name(role)).create()
        made.append(ns)
        return ns
    try:
        yield make
    finally:
        for ns in reversed(made):
            ns.delete()


@pytest.fixture
def two_hosts() -> Iterator[netlab.TwoHosts]:
    topo = netlab.make_two_hosts()
    try:
        yield topo
    finally:
        for ns in topo.namespaces():
            ns.delete()


@pytest.fixture
def routed_hosts() -> Iterator[netlab.RoutedHosts]:
    topo = netlab.make_routed_hosts()
    try:
        yield topo
    finally:
        for ns in topo.namespaces():
            ns.delete()
