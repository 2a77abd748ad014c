"""Resolving a config before any work: every name must exist and every option must fit this machine."""

from __future__ import annotations

from dataclasses import dataclass

from modelcycle.config import PipelineConfig
from modelcycle.data.builtin import BUILTINS
from modelcycle.data.sources import split_source
from modelcycle.devices import pick_device
from modelcycle.errors import ConfigError
from modelcycle.models import ARCHITECTURES, ArchitectureEntry, Params
from modelcycle.tasks import TASKS
from modelcycle.train import OPTIMIZERS
from modelcycle.train.monitor import VALID_PREFIX
from modelcycle.train.precision import check_precision


@dataclass(frozen=True)
class ResolvedPipeline:
    """A config whose names all resolved: the architecture and its checked parameters."""

    architecture: ArchitectureEntry
    params: Params


def validate(config: PipelineConfig) -> ResolvedPipeline:
    """Resolve every name in the config (architecture and its parameters, optimizer, task, data source,
    device, precision, early-stopping metric) so that mistakes surface before any data is read."""
    entry = ARCHITECTURES.get(config.model.arch, field="model.arch")
    params = entry.check_params(config.model.params)
    OPTIMIZERS.get(config.train.optimizer.name, field="train.optimizer.name")
    if config.data.task is not None:
        TASKS.get(config.data.task, field="data.task")
    scheme, location = split_source(config.data.source)
    if scheme == "builtin":
        BUILTINS.get(location, field="data.source")
    check_precision(config.train.precision, pick_device(config.train.device))
    stopping = config.train.early_stopping
    if (
        stopping is not None
        and stopping.metric != "train_loss"
        and not stopping.metric.startswith(VALID_PREFIX)
    ):
        raise ConfigError(
            f"train.early_stopping.metric: '{stopping.metric}' is not an epoch metric",
            hint="use train_loss or valid_<metric>, e.g. valid_accuracy or valid_log_loss",
        )
    if config.train.activation_checkpointing and not entry.transformer_blocks:
        raise ConfigError(
            f"train.activation_checkpointing: '{entry.name}' has no transformer blocks to recompute",
            hint="use it with gpt, hf or hf_causal_lm",
        )
    if stopping is not None and stopping.metric.startswith(VALID_PREFIX) and config.data.split.valid == 0:
        raise ConfigError("train.early_stopping.metric: watches validation, but data.split.valid is 0")
    checkpoint = getattr(params, "checkpoint", None)
    if checkpoint is not None and config.data.preprocess.text.tokenizer != checkpoint:
        raise ConfigError(
            f"data.preprocess.text.tokenizer: a model fine-tuned from '{checkpoint}' reads its own tokens",
            hint=f'set data.preprocess.text.tokenizer: "{checkpoint}"',
        )
    return ResolvedPipeline(entry, params)
