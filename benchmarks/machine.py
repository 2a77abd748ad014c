"""The machine line every benchmark result starts with (the figures come from modelcycle.bench.machine)."""

from __future__ import annotations

from datetime import datetime, timezone

import torch

from modelcycle.bench.machine import describe_machine as machine


def describe_machine() -> str:
    found = machine()
    features = ", ".join(found.features) or "no AVX2"
    return (
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · {found.cpu} ({features}) · {found.cores} CPUs · "
        f"torch {found.torch} ({torch.get_num_threads()} threads) · onnxruntime {found.onnxruntime} · "
        f"Python {found.python}"
    )
