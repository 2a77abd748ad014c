"""Architectures by name. Each declares the kinds of input it accepts and a pydantic model of its
hyper-parameters, so a config that names the wrong architecture or parameter fails before any work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from modelcycle.errors import ConfigError
from modelcycle.plugins import PluginRegistry
from modelcycle.schema import DataKind, InputSchema
from modelcycle.tasks import TASKS


@runtime_checkable
class TransformerBlocks(Protocol):
    """A network built of repeated blocks: the units training shards one by one (FSDP) and recomputes in
    the backward pass instead of keeping their activations (``train.activation_checkpointing``)."""

    def transformer_blocks(self) -> list[nn.Module]: ...


def hf_blocks(network: Any) -> list[nn.Module]:
    """The layer stack of a transformers model, wrapped by PEFT or not: the ``nn.ModuleList`` holding its
    ``config.num_hidden_layers`` blocks (BERT's ``encoder.layer``, Llama's ``model.layers``)."""
    count = int(network.config.num_hidden_layers)
    for module in network.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return list(module)
    return []


class Params(BaseModel):
    """Base of every architecture's hyper-parameters: unknown names are refused."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ArchitectureEntry:
    """``build(inputs, output_dim, params)`` returns an ``nn.Module`` whose ``forward`` takes the input
    tensors in ``inputs.tensors`` order and returns (batch, output_dim)."""

    name: str
    input_kinds: tuple[DataKind, ...]
    params: type[Params]
    build: Callable[[InputSchema, int, Any], nn.Module]
    # Turns a trained network into the form a bundle stores (e.g. LoRA merged), with the parameters that
    # rebuild that form; the identity by default.
    finalize: Callable[[nn.Module, Any], tuple[nn.Module, Any]] | None = None
    # Kinds of input over which torch's ONNX exporter cannot translate the network; the contract checks
    # export every other (kind, task) the entry declares.
    onnx_unsupported: tuple[DataKind, ...] = ()
    # The tasks it does; None: every registered task whose model gives one output vector per row
    # (classification, regression, multi-label, a plugin's), so a new task needs no change here.
    tasks: tuple[str, ...] | None = None
    # Whether its networks are ``TransformerBlocks`` (activation checkpointing and FSDP work per block).
    transformer_blocks: bool = False

    def for_bundle(self, model: nn.Module, params: Params) -> tuple[nn.Module, Params]:
        return self.finalize(model, params) if self.finalize is not None else (model, params)

    def check_params(self, raw: dict[str, Any]) -> Params:
        try:
            return self.params.model_validate(raw)
        except ValidationError as error:
            problems = []
            for item in error.errors():
                dotted = "model.params." + ".".join(str(part) for part in item["loc"])
                message = "unknown parameter" if item["type"] == "extra_forbidden" else item["msg"]
                problems.append(f"{dotted}: {message}")
            known = ", ".join(self.params.model_fields)
            raise ConfigError(
                f"architecture '{self.name}': " + "; ".join(problems), hint=f"parameters: {known}"
            ) from None

    def check_input(self, kind: DataKind, task: str, source: str) -> None:
        """Refuse data this architecture cannot read, or a task it cannot do, before any training."""
        if kind not in self.input_kinds:
            raise ConfigError(
                f"model.arch: '{self.name}' takes {' or '.join(self.input_kinds)} data, "
                f"but {source} is {kind} data",
                hint="choose an architecture for this kind of data (see `modelcycle config schema`)",
            )
        if task not in self.task_names():
            raise ConfigError(f"model.arch: '{self.name}' does {' or '.join(self.task_names())}, not {task}")

    def task_names(self) -> list[str]:
        """The registered tasks it does (its own list, or every task with one output vector per row)."""
        if self.tasks is not None:
            return list(self.tasks)
        return [name for name in TASKS if TASKS.get(name)().row_outputs]


ARCHITECTURES: PluginRegistry[ArchitectureEntry] = PluginRegistry("architecture")


def register_architecture(entry: ArchitectureEntry) -> ArchitectureEntry:
    return ARCHITECTURES.register(entry.name)(entry)


def activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU(), "gelu": nn.GELU(), "tanh": nn.Tanh()}[name]
