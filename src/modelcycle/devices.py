"""Choose the compute device at run time (cuda, then mps, then cpu) unless the user names one."""

from __future__ import annotations

import torch

from modelcycle.errors import ConfigError

_KNOWN = ("auto", "cpu", "cuda", "mps")


def pick_device(requested: str = "auto") -> torch.device:
    """Resolve "auto" / "cpu" / "cuda[:N]" / "mps" to an available device, refusing unavailable ones."""
    kind = requested.split(":", 1)[0]
    if kind not in _KNOWN:
        raise ConfigError(
            f"train.device: unknown device '{requested}'", hint=f"use one of {', '.join(_KNOWN)}"
        )
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"train.device: '{requested}' requested but CUDA is not available", hint="use 'auto'"
        )
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device: 'mps' requested but MPS is not available", hint="use 'auto'")
    return torch.device(requested)
