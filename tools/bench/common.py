"""Shared helpers for the benchmarks: machine description, memory, percentiles."""

from __future__ import annotations

import os
import platform
import sqlite3
from typing import Any

import eventwf

__all__ = ["machine", "percentile", "rss_mb"]


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = "?"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "cpu": model,
        "cpus": os.cpu_count(),
        "eventwf": eventwf.__version__,
    }


def rss_mb() -> float:
    """Resident memory of this process now (Linux), in MB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
