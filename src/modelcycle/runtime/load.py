"""``load_model(bundle, variant)``: the network of a version or of one of its variants, by the variant's
runtime — ``torch`` (its own safetensors, optionally in fp16 / bf16), ``torch-int8`` (dynamic int8) or
``onnxruntime``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from modelcycle.bundle import Bundle, Variant
from modelcycle.errors import BundleError
from modelcycle.plugins import PluginRegistry
from modelcycle.predictor import Predictor, build_network
from modelcycle.runtime.cpu import warn_if_saturates
from modelcycle.runtime.onnx import OnnxModel
from modelcycle.runtime.torch_int8 import unpack_dynamic_int8

BASE = "base"  # the version's own weights, run eagerly by torch
ONNX_FILE = "model.onnx"
WEIGHTS = "weights.safetensors"
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}

RUNTIMES: PluginRegistry[Callable[[Bundle, Variant], nn.Module]] = PluginRegistry("runtime")


class CastModel(nn.Module):
    """A network held in fp16 / bf16: floating inputs are cast to its dtype, outputs back to float32."""

    def __init__(self, network: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.network = network.to(dtype)
        self.dtype = dtype

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        cast = [tensor.to(self.dtype) if tensor.is_floating_point() else tensor for tensor in tensors]
        return self.network(*cast).float()


class CastDecoder(CastModel):
    """A language model held in fp16 / bf16: it generates in its dtype (the engine's batched decoding, the
    one-at-a-time token loop) and hands back float32 logits."""

    def decode(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._language_model.decode(*args, **kwargs).float()

    def decode_layers(self) -> int:
        return int(self._language_model.decode_layers())

    def context_limit(self) -> int:
        return int(self._language_model.context_limit())

    def tokens(self, *args: Any, **kwargs: Any) -> Any:
        return self._language_model.tokens(*args, **kwargs)

    @property
    def _language_model(self) -> Any:
        return self.network


def cast(network: nn.Module, dtype: torch.dtype) -> CastModel:
    """``network`` held in ``dtype``; a language model keeps its ways of generating."""
    return (CastDecoder if hasattr(network, "decode") else CastModel)(network, dtype)


def _weights(variant: Variant) -> dict[str, torch.Tensor]:
    from modelcycle.bundle.io import load_weights

    return load_weights(variant.path / WEIGHTS)


@RUNTIMES.register("torch")
def _torch(bundle: Bundle, variant: Variant) -> nn.Module:
    network = build_network(bundle)
    dtype = variant.manifest.params.get("dtype")
    if dtype in DTYPES:
        network = network.to(DTYPES[dtype])
    try:
        network.load_state_dict(_weights(variant))
    except RuntimeError as error:
        raise BundleError(f"{variant.path}: weights do not fit the architecture ({error})") from None
    network.eval()
    return cast(network, DTYPES[dtype]) if dtype in DTYPES else network


@RUNTIMES.register("torch-int8")
def _torch_int8(bundle: Bundle, variant: Variant) -> nn.Module:
    try:
        return unpack_dynamic_int8(
            build_network(bundle), _weights(variant), variant.manifest.params["modules"]
        )
    except (KeyError, RuntimeError) as error:
        raise BundleError(f"{variant.path}: int8 weights do not fit the architecture ({error})") from None


@RUNTIMES.register("onnxruntime")
def _onnxruntime(bundle: Bundle, variant: Variant) -> nn.Module:
    warn_if_saturates(str(variant.path), variant.manifest.params)
    return OnnxModel(variant.path / ONNX_FILE, input_names(bundle))


def input_names(bundle: Bundle) -> list[str]:
    """The model's inputs in argument order."""
    return [tensor.name for tensor in bundle.manifest.inputs.tensors]


def load_model(bundle: Bundle, variant: str = BASE) -> nn.Module:
    """The network of ``variant`` (``base`` = the version's own weights), ready for inference on the CPU."""
    if variant == BASE:
        return Predictor.load(bundle).model
    found = bundle.variant(variant)
    runtime = RUNTIMES.get(found.manifest.runtime, field=f"{found.path / 'variant.json'}: runtime")
    return runtime(bundle, found).eval()


def load_predictor(bundle: Bundle, variant: str = BASE) -> Predictor:
    """A predictor (preprocessing + network + decoding) that runs ``variant``; a variant's predictor never
    reads the base weights, so its memory is its own."""
    if variant == BASE:
        return Predictor.load(bundle)
    return Predictor.load(bundle, network=load_model(bundle, variant))
