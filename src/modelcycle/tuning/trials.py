"""The trials of one study: the data prepared once, the study opened in the registry's database, a trial's
objective, and the loop every trial worker runs (in the command's own process, in a worker process, or in a
Ray task). Workers share nothing but the database: each takes its next trial under a registry-wide lock, so
that K workers run exactly the study's number of trials between them, and the median pruner reads the other
workers' reported values from the same storage."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from modelcycle.config import PipelineConfig, TuneConfig, validate_config
from modelcycle.data import fingerprint, load_dataset
from modelcycle.devices import pick_device
from modelcycle.errors import ConfigError, ModelcycleError
from modelcycle.pipeline import PreparedData, fit_model, prepare_data, validate
from modelcycle.registry import Registry
from modelcycle.tasks import TASKS, lower_is_better
from modelcycle.train import Hooks
from modelcycle.train.monitor import VALID_PREFIX
from modelcycle.tuning.space import check_space, suggest, trial_config

if TYPE_CHECKING:
    import optuna
    import torch

logger = logging.getLogger(__name__)
SEARCH_ATTR = "modelcycle_search"  # the user attribute naming the search that started a trial


@dataclass(frozen=True)
class Search:
    """What every trial of a study shares: the config, its search space, the prepared data (the split and
    the preprocessing do not depend on a trial), and the metric the study optimizes."""

    config: PipelineConfig
    settings: TuneConfig
    data: PreparedData
    data_fingerprint: str
    metric: str
    direction: Literal["minimize", "maximize"]
    device: torch.device


@dataclass(frozen=True)
class WorkerSpec:
    """One trial worker's orders, as JSON (they cross a process boundary or go to a Ray task).

    ``config`` is the pipeline config with its tune section; ``trials`` the study's total; ``search`` the id
    of the command that started the worker (its trials still running count towards the total); ``index``
    offsets the sampler's seed, so workers do not propose the same first values; ``threads`` caps torch's
    threads (None: torch's default)."""

    config: dict[str, Any]
    home: str
    database_url: str
    trials: int
    search: str
    index: int
    threads: int | None
    timeout_seconds: float | None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"not a tune worker's orders: {error}") from None


def prepare(config: PipelineConfig) -> Search:
    """Check the search space and the config, load and prepare the data, and resolve the metric."""
    settings = check_space(config)
    base = trial_config(config, {})
    validate(base)
    dataset = load_dataset(base.data, seed=base.seed)
    if dataset.task is None:
        raise ConfigError(f"data.target: {dataset.source} needs a target column to tune on")
    metric = settings.metric or f"{VALID_PREFIX}{TASKS.get(dataset.task).primary_metric}"
    direction: Literal["minimize", "maximize"]
    if settings.direction == "auto":
        direction = "minimize" if lower_is_better(metric) else "maximize"
    else:
        direction = settings.direction
    return Search(
        config=config,
        settings=settings,
        data=prepare_data(base, dataset, dataset.task),
        data_fingerprint=fingerprint(dataset),
        metric=metric,
        direction=direction,
        device=pick_device(base.train.device),
    )


def study_name(config: PipelineConfig) -> str:
    """Stable across more trials or a longer timeout, so that running again resumes the same study."""
    raw = config.model_dump(mode="json")
    for key in ("trials", "timeout_seconds"):
        raw["tune"].pop(key, None)
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:12]
    return f"{config.name}-{digest}"


def study_storage(registry: Registry) -> optuna.storages.RDBStorage:
    """Optuna's storage in the registry's own database (its tables beside the registry's), so that a study
    resumes wherever the registry is reachable."""
    import optuna

    engine = registry.engine
    return optuna.storages.RDBStorage(
        engine.url.render_as_string(hide_password=False),  # str(url) masks the password as ***
        engine_kwargs={"connect_args": {"timeout": 30}} if engine.dialect.name == "sqlite" else {},
    )


def open_study(search: Search, registry: Registry, *, worker: int = 0) -> optuna.Study:
    """The search's study in the registry's database, created by the first to open it."""
    import optuna

    settings = search.settings
    pruner = (
        optuna.pruners.MedianPruner(
            n_startup_trials=settings.startup_trials, n_warmup_steps=settings.warmup_epochs
        )
        if settings.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    sampler = optuna.samplers.TPESampler(
        seed=search.config.seed + worker, n_startup_trials=settings.startup_trials
    )
    return optuna.create_study(
        study_name=study_name(search.config),
        storage=study_storage(registry),
        direction=search.direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )


def run_trials(
    search: Search,
    registry: Registry,
    study: optuna.Study,
    *,
    trials: int,
    search_id: str,
    timeout_seconds: float | None = None,
) -> None:
    """Run trials until the study holds ``trials`` finished ones (with those of ``search_id`` still
    running elsewhere) or ``timeout_seconds`` have passed: no trial starts after that."""
    started = time.monotonic()
    while timeout_seconds is None or time.monotonic() - started < timeout_seconds:
        trial = _next_trial(registry, study, trials=trials, search_id=search_id)
        if trial is None:
            return
        _run_trial(search, registry, study, trial)


def run_worker(orders: str) -> None:
    """One trial worker, from its ``WorkerSpec`` as JSON: the entry point of a worker process and of a Ray
    task alike."""
    spec = WorkerSpec.from_json(orders)
    if spec.threads is not None:
        import torch

        torch.set_num_threads(spec.threads)  # K workers on one machine share its cores
    registry = Registry(spec.home, database_url=spec.database_url)
    try:
        search = prepare(validate_config(spec.config, "tune worker"))
        study = open_study(search, registry, worker=spec.index)
        run_trials(
            search,
            registry,
            study,
            trials=spec.trials,
            search_id=spec.search,
            timeout_seconds=spec.timeout_seconds,
        )
    finally:
        registry.close()


def _next_trial(
    registry: Registry, study: optuna.Study, *, trials: int, search_id: str
) -> optuna.Trial | None:
    """A new trial, or None once the study has its trials. Counting and creating happen under one
    registry-wide lock: Optuna's MaxTrialsCallback counts after a trial and creates the next one outside any
    lock, so two workers that finish together both start one more (and a resumed study would run one
    extra trial per worker before the callback first looks)."""
    from optuna.trial import TrialState

    with registry.exclusive(f"tune {study.study_name}"):
        taken = sum(
            trial.state.is_finished()
            or (trial.state == TrialState.RUNNING and trial.user_attrs.get(SEARCH_ATTR) == search_id)
            for trial in study.get_trials(deepcopy=False)
        )
        if taken >= trials:
            return None
        trial = study.ask()
        trial.set_user_attr(SEARCH_ATTR, search_id)
        return trial


def _run_trial(search: Search, registry: Registry, study: optuna.Study, trial: optuna.Trial) -> None:
    """Run the objective and tell the study how the trial ended; a trial that raises anything else than
    pruning (Ctrl-C included) is told as failed before the error goes on, so it never stays running."""
    import optuna
    from optuna.trial import TrialState

    state, value = TrialState.FAIL, None
    try:
        value = objective(search, registry, trial)
        state = TrialState.FAIL if value is None else TrialState.COMPLETE
    except optuna.TrialPruned as pruned:
        state = TrialState.PRUNED
        logger.info("trial %d %s", trial.number, pruned)
    finally:
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)


def objective(search: Search, registry: Registry, trial: optuna.Trial) -> float | None:
    """Train the trial's config, recorded as a run, reporting ``search.metric`` every epoch (pruned with
    ``optuna.TrialPruned`` when the pruner says so); its best value, or None when it failed."""
    import optuna

    metric = search.metric
    values = {key: suggest(trial, key, dimension) for key, dimension in search.settings.space.items()}
    candidate = trial_config(search.config, values)
    resolved = validate(candidate)
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
            raise optuna.TrialPruned(f"pruned after epoch {int(record['epoch'])} ({metric} = {value:.4g})")

    try:
        with registry.runs.recording(
            candidate.name,
            candidate.model_dump(mode="json"),
            config_hash=candidate.config_hash(),
            data_fingerprint=search.data_fingerprint,
            statuses={optuna.TrialPruned: "pruned"},
        ) as run:
            fit_model(candidate, resolved, search.data, Hooks(on_epoch=report), device=search.device)
    except ModelcycleError as error:
        # recorded as failed; one diverging trial fails alone, the study goes on
        logger.warning("trial %d failed: %s", trial.number, error)
        return None
    return min(best) if search.direction == "minimize" else max(best)
