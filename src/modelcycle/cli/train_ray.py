"""``modelcycle train CONFIG --ray ADDRESS [--workers N]``: the training of ``--nproc`` (``pipeline.train`` on
every rank, rank 0 recording the run, writing checkpoints and registering) in N workers of Ray Train's
``TorchTrainer`` on a running cluster, which sets up their process group: gloo on CPUs, nccl when the cluster
has GPUs (a GPU for each worker). Every worker opens this command's registry, its folder and its database URL:
nodes of one machine can share a SQLite registry; on several machines the registry must be on PostgreSQL
(``MODELCYCLE_DATABASE_URL``) and its folder, where checkpoints and bundles go, shared by every node."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypedDict, cast

from modelcycle.cli.ray_head import check_head, join_cluster
from modelcycle.cli.render import say
from modelcycle.cli.state import open_registry
from modelcycle.config import PipelineConfig, validate_config
from modelcycle.errors import ConfigError, MissingDependencyError, ModelcycleError, TrainingError
from modelcycle.pipeline import TrainResult, validate
from modelcycle.registry import Registry


class WorkerSpec(TypedDict):
    """What every worker starts from, as plain data (Ray ships it to the workers)."""

    config: dict[str, Any]
    home: str
    database_url: str
    directory: str  # the command's working directory, where relative paths of the config start
    resume: bool


def train_on_ray(
    config: PipelineConfig,
    address: str | None,
    *,
    workers: int | None,
    nproc: int | None,
    resume: bool,
    quiet: bool,
) -> TrainResult:
    """Train ``config`` on the Ray cluster at ``address`` in ``workers`` workers (default: one for each GPU
    of the cluster, else one for each of its CPUs) and return rank 0's result. The options, the config and
    the cluster's size are checked before any worker starts; a failed worker's modelcycle error is raised as
    it is. ``quiet`` (``--json``) says nothing on the way."""
    if address is None:
        raise ConfigError("needs --ray ADDRESS", parameter="--workers")
    if nproc is not None:
        raise ConfigError(
            "trains on this machine, --ray on a Ray cluster: give one of them", parameter="--nproc"
        )
    check_head(address)
    validate(config)  # fail here once, not in every worker
    try:
        import ray.train.torch
    except ImportError as error:
        raise MissingDependencyError(
            f"--ray needs Ray Train ({error})", hint="pip install 'modelcycle[ray]'"
        ) from None
    registry = open_registry()
    spec = WorkerSpec(
        config=config.model_dump(mode="json"),
        home=str(registry.home.resolve()),
        database_url=registry.url,
        directory=str(Path.cwd()),
        resume=resume,
    )
    join_cluster(address)
    try:
        count, use_gpu = scale(ray.cluster_resources(), workers, address)
        if not quiet:
            unit = "GPU" if use_gpu else "CPU"
            say(f"training {config.name} on the Ray cluster at {address}: {count} workers, one {unit} each")
        value = _fit(spec, count, use_gpu, registry)
    finally:
        ray.shutdown()
    return TrainResult(**{**value, "path": Path(value["path"])})


def scale(resources: dict[str, float], workers: int | None, address: str) -> tuple[int, bool]:
    """How many workers, and whether each takes a GPU (when the cluster has any): ``workers``, or one for each
    GPU (else CPU) of the cluster; more than the cluster has is an error, since Ray would wait for them."""
    use_gpu = resources.get("GPU", 0.0) >= 1.0
    unit = "GPU" if use_gpu else "CPU"
    available = int(resources.get(unit, 0.0))
    count = available if workers is None else workers
    if not 1 <= count <= available:
        raise ConfigError(
            f"{count} workers need {count} {unit}s; the cluster at {address} has {available}",
            hint="give fewer --workers, or add nodes to the cluster",
            parameter="--workers",
        )
    return count, use_gpu


def _fit(spec: WorkerSpec, workers: int, use_gpu: bool, registry: Registry) -> dict[str, Any]:
    """Run the workers and return rank 0's result; Ray Train's own state goes into a folder of the registry
    (shared by every node, like the registry) that is removed afterwards."""
    from ray.train import ControllerError, RunConfig, ScalingConfig, WorkerGroupError
    from ray.train.torch import TorchTrainer

    name = f"{spec['config']['name']}-{time.time_ns()}"
    storage = registry.home / "ray-train"
    # Ray's annotations are Ray Train V1's (a function returning None, a Result without return_value);
    # what runs is V2, 2.60's default, which hands rank 0's return value back as Result.return_value
    trainer = TorchTrainer(
        _work,  # type: ignore[arg-type]
        train_loop_config=dict(spec),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(name=name, storage_path=str(storage)),
    )
    try:
        result = trainer.fit()
    except WorkerGroupError as error:
        raise _worker_error(error.worker_failures) from None
    except ControllerError as error:
        raise TrainingError(f"Ray Train failed: {_first_line(error.controller_failure)}") from None
    finally:
        shutil.rmtree(storage / name, ignore_errors=True)
    value: dict[str, Any] | None = result.return_value  # type: ignore[attr-defined]
    if value is None:
        raise TrainingError("Ray Train finished, but rank 0 returned no result")
    return value


def _work(given: dict[str, Any]) -> dict[str, Any] | None:
    """One worker: ``pipeline.train`` in the process group Ray set up, from the ``WorkerSpec`` that ``_fit``
    gave. Rank 0 returns its result as plain data (Ray hands it to the caller of ``fit``); the others None."""
    from modelcycle.pipeline import train
    from modelcycle.train.distributed import shutdown

    spec = cast(WorkerSpec, given)

    try:
        os.chdir(spec["directory"])
    except OSError as error:
        raise ConfigError(
            f"the command's folder {spec['directory']} is not on this node ({error.strerror})",
            hint="run it from a folder every node has (a shared one), or give absolute paths in the config",
            parameter="--ray",
        ) from None
    config = validate_config(spec["config"])
    registry = Registry(spec["home"], database_url=spec["database_url"])
    result = train(config, registry, resume=spec["resume"])
    shutdown(together=True)  # as with torchrun: no rank leaves while rank 0 still registers
    return None if result is None else {**asdict(result), "path": str(result.path)}


def _worker_error(failures: dict[int, Exception]) -> ModelcycleError:
    """The error to report for failed workers: the first modelcycle error by rank (the cause; the other
    ranks then fail in the process group), else the lowest rank's failure in one line."""
    ranked = sorted(failures.items())
    for _rank, failure in ranked:
        if isinstance(failure, ModelcycleError):
            return failure
    if not ranked:
        return TrainingError("Ray Train's workers failed without an error")
    rank, failure = ranked[0]
    return TrainingError(f"worker {rank} failed: {_first_line(failure)}")


def _first_line(error: BaseException) -> str:
    """``Type: first line of the message``, for an error that is not modelcycle's."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"
