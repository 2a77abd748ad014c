"""Making a trained version smaller or faster — quantization, pruning, distillation — with every candidate
measured on the validation split and judged by one accuracy gate before anything may serve it."""

from modelcycle.optimize.distill import DistillResult, distill
from modelcycle.optimize.gate import Gate, GateResult
from modelcycle.optimize.prune import PruneSpec, prune_model
from modelcycle.optimize.quantize import quantize
from modelcycle.optimize.variant import OptimizeResult

__all__ = [
    "DistillResult",
    "Gate",
    "GateResult",
    "OptimizeResult",
    "PruneSpec",
    "distill",
    "prune_model",
    "quantize",
]
