"""The search space against the config: a trial's values set into a copy of the config, the space checked
before any trial, and Optuna's parameters turned back into config values."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from modelcycle.config import PipelineConfig, SearchDimension, TuneConfig, validate_config
from modelcycle.errors import ConfigError
from modelcycle.pipeline import validate

if TYPE_CHECKING:
    import optuna


def trial_config(config: PipelineConfig, values: dict[str, Any]) -> PipelineConfig:
    """The config with the ``tune`` section removed and each dotted key set to its value."""
    raw = config.model_dump(mode="json")
    raw.pop("tune", None)
    for key, value in values.items():
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"tune.space.{key}: '{part}' is not a section")
        node[leaf] = copy.deepcopy(value)
    return validate_config(raw, "tune trial")


def check_space(config: PipelineConfig) -> TuneConfig:
    """The tune section, with every dimension's key and both ends of its range valid in the config."""
    if config.tune is None:
        raise ConfigError(
            f"{config.name}: the config has no tune: section", hint="see examples/breast-cancer-mlp.yaml"
        )
    for key, dimension in config.tune.space.items():
        for value in _extremes(dimension):
            try:
                validate(trial_config(config, {key: value}))
            except ConfigError as error:
                raise ConfigError(
                    f"tune.space.{key}: {value!r} does not fit the config ({error.message})"
                ) from None
    return config.tune


def _extremes(dimension: SearchDimension) -> list[Any]:
    if dimension.type == "categorical":
        return list(dimension.choices or [])
    cast = int if dimension.type == "int" else float
    return [cast(dimension.low or 0), cast(dimension.high or 0)]


def suggest(trial: optuna.Trial, key: str, dimension: SearchDimension) -> Any:
    """The trial's value for one dimension, as the config takes it."""
    if dimension.type == "categorical":
        choices = dimension.choices or []
        # Optuna stores only scalars: lists (e.g. layer sizes) are suggested by their position
        index = trial.suggest_categorical(key, list(range(len(choices))))
        return choices[index]
    if dimension.type == "int":
        return trial.suggest_int(
            key,
            int(dimension.low or 0),
            int(dimension.high or 0),
            step=int(dimension.step or 1),
            log=dimension.log,
        )
    return trial.suggest_float(
        key, float(dimension.low or 0), float(dimension.high or 0), step=dimension.step, log=dimension.log
    )


def config_values(settings: TuneConfig | None, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's Optuna parameters as config values (categorical positions turned back into choices)."""
    space = settings.space if settings is not None else {}
    return {
        key: (space[key].choices or [])[value] if space[key].type == "categorical" else value
        for key, value in params.items()
    }
