"""Mixed precision, opt-in: bf16 autocast (CUDA, or CPU where it pays), fp16 autocast with a gradient scaler
(CUDA only). fp32 is the default everywhere."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from modelcycle.errors import ConfigError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"train.precision: fp16 needs a CUDA device, this run uses {device.type}", hint="use bf16 or fp32"
        )


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
