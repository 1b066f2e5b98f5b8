"""Medians and Markdown tables: every benchmark prints its result as text ready for docs/performance.md."""
from __future__ import annotations

import datetime
import platform
import statistics
import subprocess
import sys
from typing import Iterable, List, Sequence


def median(xs: Iterable[float]) -> float:
    xs = list(xs)
    if not xs:
        raise ValueError("median of no samples")
    return statistics.median(xs)


def spread(xs: Sequence[float]) -> str:
    """min..max, so a reader sees how noisy the medians are."""
    return f"{min(xs):.4g}..{max(xs):.4g}"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    rows = [[str(c) for c in r] for r in rows]
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def machine() -> str:
    """One line naming the machine, kernel and tools, for the head of every result."""
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        bt = subprocess.run(["bpftrace", "--version"], stdout=subprocess.PIPE, text=True).stdout.strip()
    except OSError:
        bt = "bpftrace absent"
    ncpu = __import__("os").cpu_count()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{now}; kernel {platform.release()}; {ncpu} CPUs ({cpu}); Python {sys.version.split()[0]}; {bt}")


def header(title: str, argv: List[str]) -> None:
    print(f"## {title}\n")
    print(f"Command: `{' '.join(argv)}`  ")
    print(f"Machine: {machine()}\n")
