"""What a benchmark ran on, stored with its figures: timings mean nothing without the CPU, the cores and the
runtime versions behind them."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# The instruction sets that decide whether int8 and bf16 are fast here (VNNI, AVX-512 BF16, AMX).
FEATURES = ("avx2", "avx512f", "avx_vnni", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


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
        cpu=_cpu_field("model name") or platform.processor() or platform.machine() or "unknown",
        features=[flag for flag in FEATURES if flag in (_cpu_field("flags") or "").split()],
        cores=cores,
        usable_cores=usable,
        platform=platform.platform(),
        python=platform.python_version(),
        torch=_version("torch"),
        onnxruntime=_version("onnxruntime"),
    )


def _cpu_field(name: str) -> str | None:
    """A field of the first processor in /proc/cpuinfo (Linux), or None."""
    try:
        for line in CPUINFO.read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name and value.strip():
                return value.strip()
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None
