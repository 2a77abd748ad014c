"""The machine line every benchmark result starts with."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone

import torch


def describe_machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            cpu = next(line.split(":", 1)[1].strip() for line in stream if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · {cpu} · {os.cpu_count()} CPUs · "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads) · Python {platform.python_version()}")
