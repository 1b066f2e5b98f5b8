"""Boot a Debian kernel under QEMU (virtme-ng, TCG) and run the requires_kernel tests inside it.

One boot per kernel: the guest runs tests/vm/guest.sh, which runs pytest on tests/kernel with
`-m requires_kernel` and writes junit.xml, results.json, pytest.log and exitstatus into a results
directory shared read-write with the host. Usage: python3 -m tests.vm.run [6.1] [6.12] [-- pytest args]
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from tests.vm import kernels

TREE = Path(__file__).resolve().parents[2]
GUEST_SCRIPT = TREE / "tests" / "vm" / "guest.sh"
# A healthy guest run measured 336 s (6.12) and 373 s (6.1) on the 2-core machine at load ~2.5-5,
# 2026-11-25, after the per-program tests were merged. 900 s leaves ~2.4x for a loaded machine
# while two guests plus the ~12 min host part stay within ~45 min even if both time out.
BOOT_TIMEOUT = int(os.environ.get("NETBEE_VM_TIMEOUT", "900"))
VNG_FAILED = 255   # vng's status when QEMU or its own plumbing failed (not the guest's tests)


@dataclass
class GuestRun:
    series: str
    release: str
    exitstatus: Optional[int]
    seconds: float
    results_dir: Path
    console: str
    pytest_log: str
    results: Dict[str, object] = field(default_factory=dict)
    junit: Dict[str, int] = field(default_factory=dict)
    vng_status: Optional[int] = None   # vng's own exit status (124: the timeout)

    def counts(self) -> List[Dict[str, object]]:
        return list(self.results.get("counts", []))  # type: ignore[arg-type]

    def tests(self) -> List[Dict[str, str]]:
        return list(self.results.get("tests", []))  # type: ignore[arg-type]


def vng_command(kernel_root: Path, results: Path, script_cmd: str, cpus: int = 2) -> List[str]:
    image = kernels.vmlinuz(kernel_root)
    # kvm does not run stock kernels here (see shared notes): TCG, and keep udev from loading kvm.
    # The guest mounts a tmpfs over /var/cache, hiding the modules vng links /lib/modules to:
    # hand that directory in explicitly.
    return ["vng", "--run", str(image), "--user", "root", "--cpus", str(cpus), "--memory", "2G",
            "--disable-kvm", "--force-9p", "--append", "modprobe.blacklist=kvm,kvm_amd,kvm_intel",
            "--rodir", str(kernel_root / "lib" / "modules"),
            "--rwdir", str(results), "--cwd", str(TREE), "--exec", script_cmd]


def _junit_counts(path: Path) -> Dict[str, int]:
    if not path.exists():
        return {}
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    out = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for s in suites:
        for k in out:
            out[k] += int(s.get(k, 0))
    return out


def boot(series: str, pytest_args: Sequence[str] = (), timeout: int = BOOT_TIMEOUT,
         keep: bool = False) -> GuestRun:
    """Boot the series' kernel once, run the guest test subset, return what came back."""
    root = kernels.kernel_dir(series)
    run = _boot_once(series, root, pytest_args, timeout)
    if run.exitstatus is None and (not run.pytest_log or run.vng_status == VNG_FAILED):
        # The guest never started pytest, or vng itself failed under it (exit 255: seen once before
        # pytest with several guests at once, and once 56 s into a run that passed whole on the next
        # boot, 2026-12-04, nothing on the console): one more boot, keeping the first failure
        # visible. A timeout (124) is not retried, and a guest that fails twice fails the test.
        first = run
        shutil.rmtree(first.results_dir, ignore_errors=True)
        run = _boot_once(series, root, pytest_args, timeout)
        run.console = f"[first boot failed after {first.seconds:.0f}s: {first.console.strip()}]\n" + run.console
    if not keep:
        _save_btf(root, run.results_dir)
        shutil.rmtree(run.results_dir, ignore_errors=True)
    return run


def _boot_once(series: str, root: Path, pytest_args: Sequence[str], timeout: int) -> GuestRun:
    results = Path(tempfile.mkdtemp(prefix=f"netbee-vm-{series}-"))
    # sys.executable is the interpreter itself (not a pyenv shim); no realpath: a venv's python is a
    # symlink whose location is what makes the venv's site-packages visible.
    python = sys.executable
    script = shlex.join(["sh", str(GUEST_SCRIPT), str(results), python, str(TREE), series] + list(pytest_args))
    cmd = ["timeout", "-k", "10", str(timeout)] + vng_command(root, results, script)
    start = time.monotonic()
    # QEMU reopens /proc/self/fd/1 with truncation: a pipe, never a file, for its output.
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace", cwd=TREE)
    seconds = time.monotonic() - start
    status_file = results / "exitstatus"
    status = int(status_file.read_text().strip()) if status_file.exists() else None
    log = results / "pytest.log"
    run = GuestRun(series, kernels.release(root), status, seconds, results, proc.stdout,
                   log.read_text(errors="replace") if log.exists() else "")
    data = results / "results.json"
    if data.exists():
        run.results = json.loads(data.read_text())
    run.junit = _junit_counts(results / "junit.xml")
    run.vng_status = proc.returncode
    if proc.returncode != 0 and status is None:
        run.console += f"\n[vng exited {proc.returncode}; 124 means the {timeout}s timeout hit]"
    return run


def _save_btf(root: Path, results: Path) -> None:
    """The guest's /sys/kernel/btf/vmlinux, kept next to the kernel as a cross-check for kernel_btf()."""
    src = results / "vmlinux.btf"
    if src.exists() and not (root / "guest-vmlinux.btf").exists():
        shutil.copyfile(src, root / "guest-vmlinux.btf")


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    extra: List[str] = []
    if "--" in args:
        i = args.index("--")
        args, extra = args[:i], args[i + 1:]
    worst = 0
    for series in args or sorted(kernels.SERIES):
        run = boot(series, extra)
        print(f"== {series} ({run.release}): exit {run.exitstatus} in {run.seconds:.0f}s, junit {run.junit}")
        print(run.pytest_log or run.console[-4000:])
        worst = max(worst, 1 if run.exitstatus is None else run.exitstatus)
    return worst


if __name__ == "__main__":
    sys.exit(main())
