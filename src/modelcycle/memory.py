"""This process's peak resident memory, for training records and benchmarks. On Linux it is ``VmHWM`` from
``/proc/self/status``, which ``reset_peak_rss`` can start afresh; ru_maxrss (the fallback elsewhere) can be
neither reset nor trusted after exec, where it keeps the parent's peak."""

from __future__ import annotations

import contextlib
import resource
import sys
from pathlib import Path

_PROC = Path("/proc/self")


# after a reset VmHWM is the resident memory of that moment; pages touched between the two reads may add a few
_RESET_SLACK_BYTES = 16 * 2**20


def reset_peak_rss() -> bool:
    """Start measuring the peak afresh (writing 5 to clear_refs resets VmHWM), so that a phase's own peak
    is not hidden by what came before it (loading a model whole before sharding it). Returns whether the
    peak now counts from here: some kernels and sandboxes refuse the write or ignore it, and elsewhere
    there is no such file; the peak then keeps counting from the process's start."""
    with contextlib.suppress(OSError):
        (_PROC / "clear_refs").write_text("5")
    peak, resident = _status_bytes("VmHWM"), _status_bytes("VmRSS")
    return peak is not None and resident is not None and peak - resident <= _RESET_SLACK_BYTES


def peak_rss_bytes() -> int:
    """The most resident memory this process has held since a successful ``reset_peak_rss``, or since it
    started."""
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    most = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return most if sys.platform == "darwin" else most * 1024  # bytes on macOS, KiB elsewhere


def _status_bytes(field: str) -> int | None:
    """One ``kB`` field of /proc/self/status in bytes, or None where there is no such file or field."""
    with contextlib.suppress(OSError, ValueError):
        for line in (_PROC / "status").read_text(encoding="utf-8").splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    return None
