"""What a benchmark ran on, stored with its figures: timings mean nothing without the CPU, the cores and the
runtime versions behind them."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from modelcycle.runtime.cpu import cpu_features, cpu_field


@dataclass(frozen=True)
class Machine:
    cpu: str
    features: list[str]
    cores: int
    usable_cores: int  # the cores this process may run on (a container or taskset can allow fewer)
    platform: str
    python: str
    torch: str | None
    onnxruntime: str | None


def describe_machine() -> Machine:
    cores = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return Machine(
        cpu=cpu_field("model name") or platform.processor() or platform.machine() or "unknown",
        features=cpu_features(),
        cores=cores,
        usable_cores=usable,
        platform=platform.platform(),
        python=platform.python_version(),
        torch=_version("torch"),
        onnxruntime=_version("onnxruntime"),
    )


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None
