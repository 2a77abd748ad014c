"""Sharded training with FSDP2 (``train.strategy: fsdp``): every transformer block is one ``fully_shard``
unit and the root another, so each rank holds 1/N of the parameters, gradients and optimizer state and
gathers a block's weights only while that block runs. Also: activation checkpointing per block, the sharded
state as ``torch.distributed.checkpoint`` reads and writes it, and the trained model gathered whole on rank
0 for the bundle (a plain state dict, as every other strategy registers)."""

from __future__ import annotations

import copy
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor
from torch.utils.checkpoint import checkpoint

from modelcycle.errors import ConfigError
from modelcycle.models.base import TransformerBlocks

_PARAM_DTYPES = {"bf16": torch.bfloat16}  # fp16 is refused: FSDP2 offers it no loss scaling


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks, or none for architectures without (an MLP is one unit)."""
    return model.transformer_blocks() if isinstance(model, TransformerBlocks) else []


def checkpoint_activations(model: nn.Module) -> None:
    """Recompute each block's activations in the backward pass (torch.utils.checkpoint, non-reentrant, the
    RNG state replayed so dropout draws the same masks). The block's ``forward`` is wrapped in place, so
    parameter names, and with them checkpoints and bundles, do not change."""
    blocks = transformer_blocks(model)
    if not blocks:  # config validation refuses such architectures; a plugin's network may still lack them
        raise ConfigError(
            f"train.activation_checkpointing: the {type(model).__name__} network has no transformer blocks",
            hint="use it with gpt, hf or hf_causal_lm",
        )
    for block in blocks:
        block.forward = partial(checkpoint, block.forward, use_reentrant=False)


def skeleton(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters are on the meta device (no memory): the plain module the
    gathered weights are loaded into after sharded training. Buffers are copied for real, since the ones a
    state dict leaves out (rotary frequencies, causal masks) would otherwise be lost."""
    memo: dict[int, Any] = {
        id(parameter): nn.Parameter(
            torch.empty_like(parameter, device="meta"), requires_grad=parameter.requires_grad
        )
        for parameter in model.parameters()
    }
    return copy.deepcopy(model, memo)


def shard(model: nn.Module, precision: str, device: torch.device, world_size: int) -> None:
    """Shard ``model`` in place over every rank of the process group: blocks first, then the root (which
    takes what is left: embeddings, head, norms). Mixed precision is FSDP2's policy: parameters gathered
    in bf16 for compute, gradients reduced in fp32."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if precision == "fp16":
        raise ConfigError(
            "train.precision: fp16 needs loss scaling, which sharded training does not offer here",
            hint="use bf16 with train.strategy: fsdp",
        )
    state = model.state_dict()
    buffers = [name for name, _ in model.named_buffers() if name in state]
    if buffers:
        raise ConfigError(
            f"train.strategy: fsdp keeps no buffers in step across ranks, and this model has "
            f"{', '.join(buffers[:3])}{' …' if len(buffers) > 3 else ''}",
            hint="train models with running statistics (BatchNorm) with train.strategy: ddp",
        )
    mesh = init_device_mesh(device.type, (world_size,))
    policy = MixedPrecisionPolicy(param_dtype=_PARAM_DTYPES.get(precision), reduce_dtype=torch.float32)
    for block in transformer_blocks(model):
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


def sharded_state(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, Any]]:
    """This rank's shards of the model and optimizer state, keyed by parameter name (DTensors). The
    optimizer's state is created first if it has none yet (a resuming run), as the template loading
    fills."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    return get_state_dict(model, optimizer)


def load_sharded_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    model_state: dict[str, Any],
    optimizer_state: dict[str, Any],
) -> None:
    from torch.distributed.checkpoint.state_dict import set_state_dict

    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state)


def gather_full_model(model: nn.Module, plain: nn.Module, *, is_main: bool) -> nn.Module:
    """The sharded ``model``'s weights gathered whole into ``plain`` (its ``skeleton``) on rank 0, on the
    CPU; every rank must call it (it is a collective). Tied weights stay tied. Other ranks get ``model``
    back unchanged."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    ties = _tied_names(plain)
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not is_main:
        return model
    plain.load_state_dict(full, assign=True)
    for first, *others in ties:
        for name in others:
            owner, _, leaf = name.rpartition(".")
            setattr(plain.get_submodule(owner), leaf, plain.get_parameter(first))
    return plain


def _tied_names(model: nn.Module) -> list[list[str]]:
    """Groups of parameter names that are one tensor (an input embedding tied to the output head)."""
    names: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), []).append(name)
    return [group for group in names.values() if len(group) > 1]


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes this rank holds of the training state: parameters, their gradients (one per trainable
    parameter, counted whether or not they are allocated right now) and the optimizer's moments."""
    parameters = list(model.parameters())
    total = sum(_local_bytes(p) for p in parameters) + sum(
        _local_bytes(p) for p in parameters if p.requires_grad
    )
    for values in optimizer.state.values():
        total += sum(_local_bytes(v) for v in values.values() if isinstance(v, torch.Tensor))
    return total


def _local_bytes(tensor: torch.Tensor) -> int:
    local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
    return local.numel() * local.element_size()
