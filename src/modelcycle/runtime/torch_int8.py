"""Dynamic int8 quantization with torch.ao (Linear per output channel, recurrent layers per tensor), stored
without pickle: a quantized Linear's int8 weight and its per-channel scales and zero points go into
safetensors as plain tensors; recurrent layers keep float weights in the file and are quantized again on
load (deterministic, so the loaded model computes exactly what was measured)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

QUANTIZABLE: dict[str, type[nn.Module]] = {"Linear": nn.Linear, "LSTM": nn.LSTM, "GRU": nn.GRU}
INT8, SCALE, ZERO_POINT = "weight_int8", "weight_scale", "weight_zero_point"
CHANNEL_AXIS = 0  # a Linear weight is (out, in): one scale per output feature


@contextmanager
def _quiet() -> Iterator[None]:
    """torch.ao warns that eager quantization moves to torchao, which is not a dependency here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def quantize_dynamic_int8(model: nn.Module, modules: list[str]) -> nn.Module:
    """A copy of ``model`` (fp32, on the CPU) with the named layer types quantized to dynamic int8: Linear
    weights per output channel (per-tensor scales cost MiniLM 2 accuracy points), recurrent weights per
    tensor (the only scheme torch.ao has for them)."""
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    spec = {
        QUANTIZABLE[name]: per_channel_dynamic_qconfig if name == "Linear" else default_dynamic_qconfig
        for name in modules
    }
    with _quiet():
        return torch.ao.quantization.quantize_dynamic(
            model.cpu().eval(), spec, dtype=torch.qint8, inplace=False
        )


def _quantized_linears(model: nn.Module) -> Iterator[tuple[str, Any]]:
    linear = torch.ao.nn.quantized.dynamic.Linear
    return ((name, module) for name, module in model.named_modules() if isinstance(module, linear))


def pack_dynamic_int8(float_model: nn.Module, quantized: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors that rebuild ``quantized``: every float tensor of ``float_model`` except the weights of
    quantized Linear layers, which are stored as int8 with their quantization parameters."""
    state = dict(float_model.state_dict())
    for name, module in _quantized_linears(quantized):
        weight, bias = module._weight_bias()
        del state[f"{name}.weight"]
        state[f"{name}.{INT8}"] = weight.int_repr()
        state[f"{name}.{SCALE}"] = weight.q_per_channel_scales()
        state[f"{name}.{ZERO_POINT}"] = weight.q_per_channel_zero_points()
        if bias is not None:
            state[f"{name}.bias"] = bias.detach()
    return state


def unpack_dynamic_int8(
    float_model: nn.Module, state: dict[str, torch.Tensor], modules: list[str]
) -> nn.Module:
    """``float_model`` (freshly built) quantized as the stored variant was, with its stored int8 weights."""
    int8_prefixes = {key[: -len(INT8) - 1] for key in state if key.endswith(f".{INT8}")}
    float_state = {
        key: value
        for key, value in state.items()
        if not any(key.startswith(f"{prefix}.") for prefix in int8_prefixes)
    }
    missing = set(float_model.state_dict()) - set(float_state)
    unexplained = {key for key in missing if key.rsplit(".", 1)[0] not in int8_prefixes}
    if unexplained:
        raise KeyError(f"weights missing from the int8 variant: {sorted(unexplained)[:3]}")
    float_model.load_state_dict(float_state, strict=False)
    quantized = quantize_dynamic_int8(float_model, modules)
    with _quiet():
        for name, module in _quantized_linears(quantized):
            if name not in int8_prefixes:
                continue
            weight = torch._make_per_channel_quantized_tensor(
                state[f"{name}.{INT8}"],
                state[f"{name}.{SCALE}"],
                state[f"{name}.{ZERO_POINT}"],
                CHANNEL_AXIS,
            )
            module.set_weight_bias(weight, state.get(f"{name}.bias"))
    return quantized
