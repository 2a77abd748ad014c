"""Running any form of a version — the base weights or one of its variants — behind one interface: an
``nn.Module`` whose ``forward`` takes the model's input tensors and returns float32 outputs. Evaluation,
benchmarking and serving use it without knowing which runtime is underneath."""

from modelcycle.runtime.load import BASE, RUNTIMES, load_model, load_predictor
from modelcycle.runtime.onnx import OnnxModel
from modelcycle.runtime.torch_int8 import pack_dynamic_int8, quantize_dynamic_int8

__all__ = [
    "BASE",
    "RUNTIMES",
    "OnnxModel",
    "load_model",
    "load_predictor",
    "pack_dynamic_int8",
    "quantize_dynamic_int8",
]
