"""This process's peak resident memory, for training records and benchmarks. On Linux it is ``VmHWM`` from
``/proc/self/status``, which ``reset_peak_rss`` can start afresh; ru_maxrss (the fallback elsewhere) can be
neither reset nor trusted after exec, where it keeps the parent's peak."""

from __future__ import annotations

import contextlib
import resource
import sys
from pathlib import Path

_PROC = Path("/proc/self")


def reset_peak_rss() -> None:
    """Start measuring the peak afresh (writing 5 to clear_refs resets VmHWM), so that a phase's own peak
    is not hidden by what came before it (loading a model whole before sharding it). Elsewhere a no-op: the
    peak then counts from the process's start."""
    with contextlib.suppress(OSError):
        (_PROC / "clear_refs").write_text("5")


def peak_rss_bytes() -> int:
    """The most resident memory this process has held since ``reset_peak_rss``, or since it started."""
    with contextlib.suppress(OSError, ValueError):
        for line in (_PROC / "status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere
