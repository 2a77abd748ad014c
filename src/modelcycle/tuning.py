"""``tune(config)``: an Optuna study over the config's ``tune.space``. Each trial trains a copy of the config
with sampled values, reports its validation metric every epoch (the median pruner stops poor trials early)
and is recorded as a run; the study lives in the registry's database, so an interrupted search resumes
where it stopped; the best trial's config is then trained once more and registered."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelcycle.config import PipelineConfig, SearchDimension, TuneConfig, validate_config
from modelcycle.data import fingerprint, load_dataset
from modelcycle.devices import pick_device
from modelcycle.errors import ConfigError, ModelcycleError, TrainingError
from modelcycle.pipeline import TrainResult, fit_model, prepare_data, train, validate
from modelcycle.registry import Registry
from modelcycle.tasks import TASKS, lower_is_better
from modelcycle.train import Hooks
from modelcycle.train.monitor import VALID_PREFIX

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneResult:
    study: str
    metric: str
    direction: str
    best_value: float
    best_params: dict[str, Any]
    trials_complete: int
    trials_pruned: int
    trials_failed: int
    registered: TrainResult


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


def study_name(config: PipelineConfig) -> str:
    """Stable across more trials or a longer timeout, so that running again resumes the same study."""
    raw = config.model_dump(mode="json")
    for key in ("trials", "timeout_seconds"):
        raw["tune"].pop(key, None)
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:12]
    return f"{config.name}-{digest}"


def tune(config: PipelineConfig, registry: Registry, *, trials: int | None = None) -> TuneResult:
    import optuna  # heavy: only when tuning

    settings = check_space(config)
    base = trial_config(config, {})
    validate(base)
    dataset = load_dataset(base.data, seed=base.seed)
    if dataset.task is None:
        raise ConfigError(f"data.target: {dataset.source} needs a target column to tune on")
    data = prepare_data(base, dataset, dataset.task)  # the split and preprocessing do not depend on a trial
    metric = settings.metric or f"{VALID_PREFIX}{TASKS.get(dataset.task).primary_metric}"
    direction = settings.direction
    if direction == "auto":
        direction = "minimize" if lower_is_better(metric) else "maximize"
    device = pick_device(base.train.device)
    data_fingerprint = fingerprint(dataset)

    def objective(trial: optuna.Trial) -> float:
        values = {key: _suggest(trial, key, dimension) for key, dimension in settings.space.items()}
        candidate = trial_config(config, values)
        trial_resolved = validate(candidate)
        best: list[float] = []

        def report(step: int, record: dict[str, float]) -> None:
            run.log_metrics(record, step=step)  # the trial's run, opened below before any epoch ends
            if metric not in record:
                raise ConfigError(
                    f"tune.metric: '{metric}' is not measured", hint=f"measured: {', '.join(record)}"
                )
            value = record[metric]
            best.append(value)
            trial.report(value, int(record["epoch"]))
            if trial.should_prune():
                raise optuna.TrialPruned(
                    f"pruned after epoch {int(record['epoch'])} ({metric} = {value:.4g})"
                )

        try:
            with registry.runs.recording(
                candidate.name,
                candidate.model_dump(mode="json"),
                config_hash=candidate.config_hash(),
                data_fingerprint=data_fingerprint,
                statuses={optuna.TrialPruned: "pruned"},
            ) as run:
                fit_model(candidate, trial_resolved, data, Hooks(on_epoch=report), device=device)
        except ModelcycleError as error:
            # recorded as failed; one diverging trial fails alone, the study goes on
            logger.warning("trial %d failed: %s", trial.number, error)
            return float("nan")
        return min(best) if direction == "minimize" else max(best)

    storage = study_storage(registry)
    pruner = (
        optuna.pruners.MedianPruner(
            n_startup_trials=settings.startup_trials, n_warmup_steps=settings.warmup_epochs
        )
        if settings.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        study_name=study_name(config),
        storage=storage,
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=settings.startup_trials),
        pruner=pruner,
        load_if_exists=True,
    )
    done = sum(t.state.is_finished() for t in study.trials)
    remaining = max(0, (trials or settings.trials) - done)
    study.optimize(objective, n_trials=remaining, timeout=settings.timeout_seconds, catch=())
    states = [t.state for t in study.trials]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise ConfigError(
            f"{config.name}: no trial completed", hint="see `modelcycle runs list` for their errors"
        )
    best_config = trial_config(config, _values(config.tune, study.best_trial.params))
    registered = train(best_config, registry)
    if registered is None:
        raise TrainingError("tuning runs in one process; start it without torchrun")
    return TuneResult(
        study=study.study_name,
        metric=metric,
        direction=direction,
        best_value=float(study.best_value),
        best_params=_values(config.tune, study.best_trial.params),
        trials_complete=len(complete),
        trials_pruned=states.count(optuna.trial.TrialState.PRUNED),
        trials_failed=states.count(optuna.trial.TrialState.FAIL),
        registered=registered,
    )


def study_storage(registry: Registry) -> optuna.storages.RDBStorage:
    """Optuna's storage in the registry's own database (its tables beside the registry's), so that a study
    resumes wherever the registry is reachable."""
    import optuna

    engine = registry.engine
    return optuna.storages.RDBStorage(
        engine.url.render_as_string(hide_password=False),  # str(url) masks the password as ***
        engine_kwargs={"connect_args": {"timeout": 30}} if engine.dialect.name == "sqlite" else {},
    )


def _suggest(trial: Any, key: str, dimension: SearchDimension) -> Any:
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


def _values(settings: TuneConfig | None, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's Optuna parameters as config values (categorical positions turned back into choices)."""
    space = settings.space if settings is not None else {}
    return {
        key: (space[key].choices or [])[value] if space[key].type == "categorical" else value
        for key, value in params.items()
    }
