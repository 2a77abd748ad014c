"""Mixed precision, opt-in: bf16 autocast (CUDA, or CPU where it pays), fp16 autocast with a gradient scaler
(CUDA only). fp32 is the default everywhere."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch

from modelcycle.errors import ConfigError

logger = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"train.precision: fp16 needs a CUDA device, this run uses {device.type}", hint="use bf16 or fp32"
        )
    if precision == "bf16" and device.type == "cpu" and not _cpu_has_bf16_units():
        logger.warning(
            "train.precision: bf16 on a CPU without AMX / AVX512-BF16 runs far slower than fp32 "
            "(a bf16 matmul measured ~50x slower on AVX2 machines)"
        )


def _cpu_has_bf16_units() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            flags = stream.read()
    except OSError:
        return True  # not Linux: do not guess
    return "amx_bf16" in flags or "avx512_bf16" in flags


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=_DTYPES[precision]):
        yield


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """Enabled only for fp16, whose small range needs loss scaling; a no-op otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
