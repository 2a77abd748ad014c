"""Contract check of a runtime plugin, on a variant it runs: the variant loads through the runtime registry
as the server loads it, returns float32 outputs of the bundle's output shape, stays within a tolerance of the
base weights, gives the same outputs when loaded again, and gives a row alone what it gives that row within a
batch (a dynamically quantized runtime scales each batch on its own, so that too is within the tolerance)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from modelcycle.bundle import Bundle
from modelcycle.runtime import BASE, RUNTIMES, load_model


def check_runtime(bundle: Bundle, variant: str, inputs: dict[str, np.ndarray], *, tolerance: float) -> None:
    """Raise AssertionError unless ``variant`` of ``bundle`` keeps the runtime contract on ``inputs`` (at
    least two rows). ``tolerance`` is the largest difference allowed from the base weights' outputs, as a
    fraction of their range (1e-5 for an fp32 conversion, ~0.05 for int8)."""
    runtime = bundle.variant(variant).manifest.runtime
    assert runtime in RUNTIMES, f"{variant}: runtime '{runtime}' is not registered"
    expected = _outputs(load_model(bundle, BASE), inputs)
    model = load_model(bundle, variant)
    got = _outputs(model, inputs)
    spec = bundle.manifest.outputs.tensors[0]
    assert got.dtype == np.float32, f"{variant} ({runtime}): outputs are {got.dtype}, not float32"
    assert got.shape == expected.shape, f"{variant} ({runtime}): outputs {got.shape}, spec {spec.shape}"
    bound = tolerance * max(float(np.ptp(expected)), 1e-6)
    _assert_within(got, expected, bound, f"{variant} ({runtime}) differs from the base weights")
    np.testing.assert_array_equal(
        _outputs(load_model(bundle, variant), inputs), got, err_msg=f"{variant}: a second load differs"
    )
    for row in range(len(got)):
        alone = _outputs(model, {name: array[row : row + 1] for name, array in inputs.items()})
        _assert_within(alone[0], got[row], bound, f"{variant} ({runtime}): row {row} alone differs")


@torch.no_grad()
def _outputs(model: nn.Module, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Every row at once, as one batch (``inference.predict`` would split a large one and cast to float)."""
    model.eval()
    return model(*(torch.from_numpy(np.ascontiguousarray(array)) for array in inputs.values())).numpy()


def _assert_within(got: np.ndarray, expected: np.ndarray, bound: float, what: str) -> None:
    difference = float(np.max(np.abs(got - expected)))
    assert difference <= bound, f"{what} by {difference:.3g} (allowed {bound:.3g})"
