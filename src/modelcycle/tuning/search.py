"""``tune(config)``: the whole search. The trials run in this process, in K worker processes on this
machine, or as K tasks on a Ray cluster, all on the one study in the registry's database; then the best
trial's config is trained once more, here, and registered."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

from modelcycle.config import PipelineConfig
from modelcycle.errors import ConfigError, TrainingError
from modelcycle.pipeline import TrainResult, train
from modelcycle.registry import Registry
from modelcycle.tuning.space import config_values, trial_config
from modelcycle.tuning.trials import WorkerSpec, open_study, prepare, run_trials
from modelcycle.tuning.workers import run_processes, run_ray_tasks


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


def tune(
    config: PipelineConfig,
    registry: Registry,
    *,
    trials: int | None = None,
    workers: int = 1,
    on_ray: bool = False,
) -> TuneResult:
    """Search ``config.tune.space`` until the study holds ``trials`` (default ``tune.trials``) finished
    trials, resuming a study interrupted before; then train and register the best trial's config.

    ``workers`` > 1 runs that many worker processes, each on ``cpu_count // workers`` torch threads;
    ``on_ray`` runs ``workers`` tasks on the Ray cluster this process has joined instead (the registry's
    database must be reachable from every node: PostgreSQL for a cluster of several machines)."""
    import optuna

    if workers < 1:
        raise ConfigError(f"{workers} workers: need at least 1", parameter="workers")
    search = prepare(config)  # the config, the space and the data are checked before any worker starts
    study = open_study(search, registry)  # created here, so that workers only load it
    total = trials or search.settings.trials
    search_id = uuid.uuid4().hex
    if workers == 1 and not on_ray:
        run_trials(
            search,
            registry,
            study,
            trials=total,
            search_id=search_id,
            timeout_seconds=search.settings.timeout_seconds,
        )
    else:
        threads = 1 if on_ray else max(1, (os.cpu_count() or 1) // workers)
        specs = [
            WorkerSpec(
                config=config.model_dump(mode="json"),
                home=str(registry.home.resolve()),
                database_url=registry.url,
                trials=total,
                search=search_id,
                index=index,
                threads=threads,
                timeout_seconds=search.settings.timeout_seconds,
            )
            for index in range(workers)
        ]
        (run_ray_tasks if on_ray else run_processes)(specs)
    states = [trial.state for trial in study.trials]
    complete = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise ConfigError(
            f"{config.name}: no trial completed", hint="see `modelcycle runs list` for their errors"
        )
    best_params = config_values(config.tune, study.best_trial.params)
    registered = train(trial_config(config, best_params), registry)
    if registered is None:
        raise TrainingError("tuning runs in one process; start it without torchrun")
    return TuneResult(
        study=study.study_name,
        metric=search.metric,
        direction=search.direction,
        best_value=float(study.best_value),
        best_params=best_params,
        trials_complete=len(complete),
        trials_pruned=states.count(optuna.trial.TrialState.PRUNED),
        trials_failed=states.count(optuna.trial.TrialState.FAIL),
        registered=registered,
    )
