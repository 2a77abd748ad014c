"""``train(config)``: validate → load → prepare → (resume) → fit → evaluate → register, recording the run.
With torchrun (one machine or several) or Ray Train every rank trains; only rank 0 touches the registry and
writes checkpoints, except the shards of a sharded (fsdp) run, which every rank writes into the run's
folder (so on several machines that folder must be shared). On resume every rank reads the checkpoint rank
0 picked. Ranks started with different configs fail together at the start."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from modelcycle.config import PipelineConfig
from modelcycle.data import fingerprint, load_dataset
from modelcycle.devices import pick_device
from modelcycle.errors import ConfigError, ModelcycleError, RegistryError, TrainingError
from modelcycle.pipeline.prepare import PreparedData, Teacher, prepare_data, task_and_training_rows
from modelcycle.pipeline.publish import register_model
from modelcycle.pipeline.resolve import ResolvedPipeline, validate
from modelcycle.registry import Registry
from modelcycle.registry.runs import ActiveRun
from modelcycle.seeding import seed_everything
from modelcycle.tasks import Task
from modelcycle.train import FitResult, Hooks, Trainer
from modelcycle.train import checkpoint as checkpoints
from modelcycle.train.checkpoint import RunFolder, Snapshot
from modelcycle.train.distributed import Distributed, from_environment
from modelcycle.train.loop import EpochCallback

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What ``modelcycle train`` produced: the registered reference, its metrics per split, and the run."""

    ref: str
    run_id: str
    path: Path
    metrics: dict[str, dict[str, float]]
    best_epoch: int
    samples_per_second: float
    stopped_early: bool


def checkpoint_root(registry: Registry, config: PipelineConfig) -> Path:
    """Where the runs of a config keep their checkpoints, each in a folder of its own (``<root>/<run id>``),
    so that trainings of one config can run at once."""
    return registry.home / "checkpoints" / config.name


def train(
    config: PipelineConfig,
    registry: Registry,
    *,
    resume: bool = False,
    on_epoch: EpochCallback | None = None,
    teacher: Teacher | None = None,
) -> TrainResult | None:
    """Train the configured model and register it as a new version; ``resume`` continues the interrupted
    run of this config (the one checkpointed last, if several) from its newest checkpoint; a ``teacher``
    distills itself into the model (and is named as its parent). Data problems surface before a run is
    recorded; a run that fails after that is recorded as failed. Ranks other than 0 of a distributed run
    return None."""
    resolved = validate(config)
    distributed, device = from_environment(pick_device(config.train.device))
    try:
        return _train(config, resolved, registry, distributed, device, resume, on_epoch, teacher)
    except RuntimeError as error:  # gloo and NCCL report a rank that died as a broken connection
        if not distributed.active or not _lost_a_peer(error):
            raise
        raise TrainingError(
            f"rank {distributed.rank}: another rank of the group stopped "
            f"({str(error).splitlines()[0][:200]})",
            hint="that rank's own error says why",
        ) from None


def _lost_a_peer(error: RuntimeError) -> bool:
    """torch's own errors of the process group, or gloo's (a plain RuntimeError) when a peer went away."""
    return isinstance(error, dist.DistError) or "Connection closed by peer" in str(error)


def _train(
    config: PipelineConfig,
    resolved: ResolvedPipeline,
    registry: Registry,
    distributed: Distributed,
    device: torch.device,
    resume: bool,
    on_epoch: EpochCallback | None,
    teacher: Teacher | None,
) -> TrainResult | None:
    """``train`` once the process group is known: its failures on a lost peer are translated above."""
    distributed.require_same(
        config.config_hash(),
        "config",
        hint="start every node with the same config file, overrides and package version",
    )
    _require_registry(registry, distributed)
    dataset = load_dataset(config.data, seed=config.seed)
    if dataset.task is None:
        raise ConfigError(
            f"data.target: {dataset.source} needs a target column to train on",
            hint="set data.target to the column to predict",
        )
    resolved.architecture.check_input(dataset.kind, dataset.task, dataset.source)
    data = prepare_data(config, dataset, dataset.task)
    data_fingerprint = fingerprint(dataset)
    root = checkpoint_root(registry, config)
    sharded = config.train.strategy == "fsdp" and distributed.active
    with ExitStack() as held:  # the run's checkpoint folder, let go of (checkpoints kept) if the run fails
        folder, snapshot, run_id, name = (
            _resume_point(root, config, distributed, held) if resume else (None, None, "", "")
        )
        fit = partial(
            _fit_and_register,
            config,
            resolved,
            data,
            registry,
            device,
            distributed,
            snapshot,
            data_fingerprint=data_fingerprint,
            on_epoch=on_epoch,
            teacher=teacher,
        )
        if not distributed.is_main:
            if not sharded:
                return fit(None, None)
            if not name:  # a fresh run's folder, once rank 0 has made it
                name = distributed.broadcast_text("")
                _require_shared(root / name, distributed)
            return fit(None, root / name)
        if snapshot is None:
            recorded = registry.runs.recording(
                config.name,
                config.model_dump(mode="json"),
                config_hash=config.config_hash(),
                data_fingerprint=data_fingerprint,
            )
        else:
            recorded = registry.runs.resuming(run_id, after_step=snapshot.progress.global_step)
        with recorded as run:
            if folder is None:
                folder = held.enter_context(checkpoints.begin(root, run.id))
                if sharded:  # the other ranks write their shards into it
                    distributed.broadcast_text(folder.directory.name)
                    _require_shared(folder.directory, distributed)
            result = fit(run, folder.directory)
        folder.discard()
        return result


def _require_registry(registry: Registry, distributed: Distributed) -> None:
    """Rank 0 opens the registry (connects, migrates) before any rank trains: one it cannot use fails every
    rank at once with rank 0's reason, rather than after the training, or as a broken connection."""
    failure: ModelcycleError | None = None
    if distributed.is_main:
        try:
            registry.engine  # noqa: B018 - opened for its errors
        except ModelcycleError as error:
            failure = error
    reason = distributed.broadcast_text(str(failure) if failure is not None else "")
    if failure is not None:
        raise failure
    if reason:
        raise RegistryError(f"rank 0 cannot use the registry: {reason}")


def _require_shared(directory: Path, distributed: Distributed) -> None:
    """Every rank must see the run's checkpoint folder, which rank 0 made or picked: to write its shards
    into it (fsdp), or to read the checkpoint it resumes from."""
    distributed.require_all(
        directory.is_dir(),
        f"cannot see the checkpoint folder {directory}",
        hint="every rank writes its shards (fsdp) or reads the checkpoint (--resume) there: "
        "put MODELCYCLE_HOME on a folder all nodes share",
    )


def _resume_point(
    root: Path, config: PipelineConfig, distributed: Distributed, held: ExitStack
) -> tuple[RunFolder | None, Snapshot, str, str]:
    """The interrupted run that ``resume`` continues: rank 0 claims its folder (held in ``held``) and tells
    the other ranks which it is; every rank loads its newest checkpoint and run id, and learns the folder's
    name."""
    folder = None
    if distributed.is_main:
        try:
            folder = held.enter_context(checkpoints.claim_interrupted(root, config.config_hash()))
        except ModelcycleError:
            distributed.broadcast_text("")  # the other ranks wait for a folder: fail them too
            raise
        name = distributed.broadcast_text(folder.directory.name)
    else:
        name = distributed.broadcast_text("")
        if not name:
            raise ConfigError("rank 0 found no interrupted run of this config to resume", parameter="resume")
    if distributed.active:  # every rank reads the checkpoint: on several machines, from a shared folder
        _require_shared(root / name, distributed)
    snapshot, run_id = checkpoints.load(root / name)
    return folder, snapshot, run_id, name


def fit_model(
    config: PipelineConfig,
    resolved: ResolvedPipeline,
    data: PreparedData,
    hooks: Hooks,
    *,
    device: torch.device,
    distributed: Distributed | None = None,
    resume: Snapshot | None = None,
    teacher: Teacher | None = None,
) -> tuple[Task, nn.Module, FitResult]:
    """Seed, build the network and train it on the prepared data; validation on the valid part is added to
    ``hooks``. Nothing is registered (tuning trials use this directly)."""
    generator = seed_everything(config.seed)
    task, train_set = task_and_training_rows(config, data, teacher)
    model = resolved.architecture.build(
        data.preprocessor.input_schema(), task.output_dim(data.num_outputs), resolved.params
    )

    def validate_model(candidate: nn.Module) -> dict[str, float]:
        return data.metrics(task, candidate, "valid")

    hooks.validate = validate_model if "valid" in data.tensors else None
    trainer = Trainer(model, task, config.train, device=device, distributed=distributed, hooks=hooks)
    outcome = trainer.fit(train_set, generator, resume=resume)
    return task, trainer.model, outcome


def _fit_and_register(
    config: PipelineConfig,
    resolved: ResolvedPipeline,
    data: PreparedData,
    registry: Registry,
    device: torch.device,
    distributed: Distributed,
    snapshot: Snapshot | None,
    run: ActiveRun | None,
    checkpoint_directory: Path | None,
    *,
    data_fingerprint: str,
    on_epoch: EpochCallback | None,
    teacher: Teacher | None,
) -> TrainResult | None:
    """Fit, then evaluate and register with the metrics recorded into ``run`` and the checkpoints written
    into ``checkpoint_directory``; ranks other than 0 (``run`` is None) only fit, and write their shards
    into ``checkpoint_directory`` when they are given one."""

    def log(step: int, record: dict[str, float]) -> None:
        if run is not None:
            run.log_metrics(record, step=step)

    def log_epoch(step: int, record: dict[str, float]) -> None:
        log(step, record)
        if on_epoch is not None:
            on_epoch(int(record["epoch"]), record)

    def save_checkpoint(state: Snapshot) -> None:
        if checkpoint_directory is not None:
            checkpoints.save(
                checkpoint_directory,
                state,
                config_hash=config.config_hash(),
                run_id=run.id if run is not None else "",
                group=distributed,
            )

    main = run is not None
    hooks = Hooks(
        on_epoch=log_epoch if main else None,
        on_step=log if main else None,
        checkpoint=save_checkpoint if checkpoint_directory is not None else None,
    )
    task, model, outcome = fit_model(
        config,
        resolved,
        data,
        hooks,
        device=device,
        distributed=distributed,
        resume=snapshot,
        teacher=teacher,
    )
    if run is None:
        return None
    metrics = {part: data.metrics(task, model, part) for part in data.tensors}
    log(
        outcome.global_step + 1,
        {f"{part}_{key}": value for part, values in metrics.items() for key, value in values.items()},
    )
    bundle = register_model(
        registry,
        config,
        resolved,
        data,
        task,
        model,
        outcome,
        metrics,
        run_id=run.id,
        data_fingerprint=data_fingerprint,
        parent=teacher.ref if teacher is not None else None,
    )
    run.model_ref = bundle.ref
    logger.info("registered %s (%s)", bundle.ref, metrics.get("test"))
    return TrainResult(
        bundle.ref,
        run.id,
        bundle.path,
        metrics,
        outcome.best_epoch,
        outcome.samples_per_second,
        outcome.stopped_early,
    )
