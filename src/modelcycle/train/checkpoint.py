"""Training checkpoints for exact resume, without pickle: every tensor (weights, best weights, optimizer
moments, RNG states) in safetensors, everything else (counters, history, optimizer hyper-parameters,
scheduler, scaler, Python / NumPy RNG) in JSON. Written atomically; ``latest.json`` points at the newest.
A whole model's checkpoint is one safetensors file that rank 0 writes; a sharded one (FSDP) is written by
every rank together through ``torch.distributed.checkpoint``, a safetensors file of each rank's shards, and
read back into any sharding of the same model.

Each run writes into its own folder, ``<root>/<run id>``, which it holds locked (flock) for as long as its
process lives, so that runs of one config can train at once. The system frees the lock of a process that
dies: a folder nobody holds is an interrupted run's, which ``claim_interrupted`` hands to a resuming run and
``begin`` (a fresh run) removes. Folders are made, claimed and removed only under ``<root>/.lock``."""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import numpy as np
import torch
from filelock import FileLock, Timeout
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.tensor import DTensor

from modelcycle.bundle.files import (
    TEMP_PREFIX,
    atomic_directory,
    fsync_tree,
    publish,
    remove_tree,
    sweep_stale_temporaries,
    write_json_atomic,
)
from modelcycle.errors import ConfigError, TrainingError
from modelcycle.train.distributed import Distributed

logger = logging.getLogger(__name__)

LATEST = "latest.json"
TENSORS, STATE = "tensors.safetensors", "state.json"
GUARD, RUN_LOCK = ".lock", "run.lock"  # beside the run folders; in each run folder
GUARD_TIMEOUT = 60.0  # seconds: the guard is held while folders are listed, made or removed, never for a run
_FRESH = "train without resuming to start afresh"
KEEP = 2  # checkpoints kept on disk: the newest, and the one before in case the newest is being read


@dataclass
class Progress:
    """Where training stands: counters, the partial epoch, the best epoch so far and the history."""

    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # micro-batches done in the current epoch
    global_step: int = 0  # optimizer steps done
    epoch_loss_sum: float = 0.0
    epoch_rows: int = 0
    rows_seen: int = 0
    busy_seconds: float = 0.0
    best_key: list[float] = field(default_factory=lambda: [-float("inf")])
    best_epoch: int = 0
    stale_epochs: int = 0  # epochs without improvement of the early-stopping metric
    # the value an improvement must beat by min_delta; it moves only when one does (as in Keras / Lightning)
    patience_reference: list[float] = field(default_factory=lambda: [-float("inf")])
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Snapshot:
    """Everything needed to continue a run bit for bit."""

    progress: Progress
    model: dict[str, torch.Tensor]
    best_model: dict[str, torch.Tensor] | None
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    epoch_order_state: torch.Tensor  # the data-order generator as it was when the current epoch began
    rng: dict[str, Any]
    # model, best_model and the optimizer's state are keyed by parameter name and hold this rank's shards
    sharded: bool = False
    # a sharded checkpoint as loaded: its tensors are read by ``read_sharded`` into the live model's shapes
    folder: Path | None = None


def capture_rng() -> dict[str, Any]:
    version, state, gauss = random.getstate()
    name, keys, position, has_gauss, cached = cast(
        tuple[str, np.ndarray, int, int, float], np.random.get_state()
    )
    captured: dict[str, Any] = {
        "python": [version, list(state), gauss],
        "numpy": [name, keys.tolist(), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():  # the device this process trains on (each rank its own)
        captured["cuda"] = [torch.cuda.get_rng_state()]
    return captured


def restore_rng(rng: dict[str, Any]) -> None:
    version, state, gauss = rng["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, position, has_gauss, cached = rng["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"][0])


def save(
    directory: Path, snapshot: Snapshot, *, config_hash: str, run_id: str, group: Distributed | None = None
) -> Path:
    """Write a checkpoint under ``directory`` and point ``latest.json`` at it; older ones are removed. A
    sharded snapshot is saved by every rank of ``group`` together (each calls this), the rest by rank 0."""
    group = group or Distributed()
    tensors, optimizer_scalars = _flatten(snapshot)
    state = {
        "config_hash": config_hash,
        "run_id": run_id,
        "progress": vars(snapshot.progress),
        "optimizer": {"param_groups": snapshot.optimizer["param_groups"], "scalars": optimizer_scalars},
        "scheduler": snapshot.scheduler,
        "scaler": snapshot.scaler,
        "rng": {"python": snapshot.rng["python"], "numpy": snapshot.rng["numpy"]},
        "sharded": snapshot.sharded,
        "has_best": snapshot.best_model is not None,
    }
    name = f"step-{snapshot.progress.global_step:09d}-epoch-{snapshot.progress.epoch:04d}"
    target = directory / name
    try:
        text = json.dumps(state)
    except TypeError as error:
        raise TrainingError(f"cannot checkpoint the training state as JSON ({error})") from None
    if group.is_main and target.exists():  # published by a run killed before it wrote latest.json
        logger.warning("replacing %s, which latest.json never pointed at", target)
        remove_tree(target)
    if snapshot.sharded:
        _save_sharded(target, tensors, text, group)
        if not group.is_main:
            return target
    else:
        with atomic_directory(target) as temp:
            save_file(
                {key: value.detach().cpu().contiguous() for key, value in tensors.items()},
                str(temp / TENSORS),
            )
            (temp / STATE).write_text(text, encoding="utf-8")
    write_json_atomic(directory / LATEST, {"checkpoint": name, "config_hash": config_hash, "run_id": run_id})
    for old in sorted(directory.glob("step-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _flatten(snapshot: Snapshot) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, Any]]]:
    """The snapshot's tensors under the names a checkpoint stores them by, and the optimizer's values that
    are not tensors (stored in the JSON state); one scheme for writing and for reading sharded ones."""
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in _distinct(snapshot.model).items()}
    if snapshot.best_model is not None:
        tensors.update({f"best.{k}": v for k, v in snapshot.best_model.items()})
    optimizer_scalars: dict[str, dict[str, Any]] = {}
    for index, values in snapshot.optimizer["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value
            else:
                optimizer_scalars.setdefault(str(index), {})[name] = value
    tensors["rng.torch"] = snapshot.rng["torch"]
    tensors["rng.epoch_order"] = snapshot.epoch_order_state
    for device, state in enumerate(snapshot.rng.get("cuda", [])):
        tensors[f"rng.cuda.{device}"] = state
    return tensors, optimizer_scalars


def _save_sharded(target: Path, tensors: dict[str, torch.Tensor], state: str, group: Distributed) -> None:
    """Every rank writes its shards into a temporary folder (one safetensors file each, no pickled
    metadata: torch's Hugging Face storage writer); rank 0 then adds the JSON state and publishes the
    folder. The temporary name is the same on every rank, so no rank has to be told it."""
    from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageWriter
    from torch.distributed.checkpoint.state_dict_saver import save as save_shards

    temp = target.parent / f"{TEMP_PREFIX}{target.name}"
    if group.is_main:
        shutil.rmtree(temp, ignore_errors=True)  # left by a run killed while saving this same step
        temp.mkdir()
    group.barrier()
    try:
        save_shards(tensors, storage_writer=HuggingFaceStorageWriter(str(temp), save_distributed=True))
    except CheckpointException as error:  # a BaseException: it would pass every `except Exception`
        raise TrainingError(f"cannot write the checkpoint {target}: {_first_failure(error)}") from None
    if group.is_main:
        (temp / STATE).write_text(state, encoding="utf-8")
        fsync_tree(temp)
        publish(temp, target)


def read_sharded(snapshot: Snapshot, model: dict[str, Any], optimizer: dict[str, Any]) -> None:
    """Fill a loaded sharded ``snapshot``'s tensors from its folder, read into the shapes of this rank's
    ``model`` and ``optimizer`` state (``sharding.sharded_state`` of the live model: any number of ranks
    reads the same checkpoint); every rank calls it."""
    from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageReader
    from torch.distributed.checkpoint.state_dict_loader import load as load_shards

    if snapshot.folder is None:
        raise TrainingError("the checkpoint was not loaded from a folder")
    has_best = snapshot.best_model is not None
    scalars = snapshot.optimizer["state"]
    for key, values in optimizer["state"].items():
        values.update(scalars.get(key, {}))  # its values that are not tensors, from the JSON state
    snapshot.model = model
    snapshot.best_model = {k: torch.zeros_like(v) for k, v in model.items()} if has_best else None
    snapshot.optimizer = {**optimizer, "param_groups": snapshot.optimizer["param_groups"]}
    snapshot.epoch_order_state = torch.empty_like(torch.get_rng_state())
    snapshot.rng["torch"] = torch.empty_like(torch.get_rng_state())
    if torch.cuda.is_available():
        snapshot.rng["cuda"] = [torch.empty_like(torch.cuda.get_rng_state())]
    tensors, _ = _flatten(snapshot)  # the snapshot's own tensors, filled in place
    try:
        load_shards(tensors, storage_reader=HuggingFaceStorageReader(str(snapshot.folder)))
    except CheckpointException as error:
        raise TrainingError(
            f"the checkpoint {snapshot.folder} does not fit this model ({_first_failure(error)})",
            hint=_FRESH,
            parameter="resume",
        ) from None


def _first_failure(error: CheckpointException) -> str:
    """One line for what failed on the ranks (torch.distributed.checkpoint gathers each rank's error)."""
    for rank, (exception, _) in error.failures.items():
        return f"rank {rank}: {type(exception).__name__}: {exception}".splitlines()[0][:300]
    return str(error)


def _distinct(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` without the names of a tensor already named (tied weights: the input embedding that is
    also the output head), which safetensors refuses to store twice; loading one fills both."""
    seen: set[int] = set()
    distinct = {}
    for name, value in state.items():
        local = value.to_local() if isinstance(value, DTensor) else value
        pointer = local.untyped_storage().data_ptr()
        if local.numel() == 0 or pointer not in seen:  # an empty shard has no storage of its own
            seen.add(pointer)
            distinct[name] = value
    return distinct


def load(directory: Path) -> tuple[Snapshot, str]:
    """The newest checkpoint of the run folder ``directory`` (see ``claim_interrupted``) and its run id."""
    latest = _pointer(directory)
    folder = directory / latest["checkpoint"]
    try:
        state = json.loads((folder / STATE).read_text(encoding="utf-8"))
        sharded = bool(state.get("sharded", False))
        tensors = {} if sharded else load_file(str(folder / TENSORS))
    except (OSError, json.JSONDecodeError, SafetensorError) as error:
        raise TrainingError(
            f"the checkpoint {folder} is damaged ({error})", hint=_FRESH, parameter="resume"
        ) from None
    # the optimizer's state is keyed by parameter position, or by parameter name when sharded
    optimizer_state: dict[int | str, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            index, name = key.removeprefix("optimizer.").rsplit(".", 1)
            optimizer_state.setdefault(int(index), {})[name] = value
    for index, values in state["optimizer"]["scalars"].items():
        optimizer_state.setdefault(index if sharded else int(index), {}).update(values)
    groups = [
        {**group, "betas": tuple(group["betas"])} if "betas" in group else group
        for group in state["optimizer"]["param_groups"]
    ]
    best = {k.removeprefix("best."): v for k, v in tensors.items() if k.startswith("best.")}
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    snapshot = Snapshot(
        progress=Progress(**state["progress"]),
        model={k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")},
        best_model=best or ({} if state.get("has_best") and sharded else None),
        optimizer={"state": optimizer_state, "param_groups": groups},
        scheduler=state["scheduler"],
        scaler=state["scaler"],
        epoch_order_state=tensors.get("rng.epoch_order", torch.empty(0, dtype=torch.uint8)),
        rng={**state["rng"], "torch": tensors.get("rng.torch"), **({"cuda": cuda} if cuda else {})},
        sharded=sharded,
        folder=folder if sharded else None,
    )
    return snapshot, str(latest["run_id"])


def _pointer(directory: Path) -> dict[str, Any]:
    """The run folder's ``latest.json``: its newest checkpoint, config hash and run id."""
    pointer = directory / LATEST
    try:
        return cast(dict[str, Any], json.loads(pointer.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError) as error:
        raise TrainingError(f"{pointer} is unreadable ({error})", hint=_FRESH, parameter="resume") from None


class RunFolder:
    """A run's checkpoint folder, held locked by this process: ``save`` into ``directory``; leaving the
    ``with`` block lets go of it with its checkpoints kept (a failed run stays resumable), ``discard``
    removes them once the run has registered its version."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = FileLock(directory / RUN_LOCK, thread_local=False, fallback_to_soft=False)

    def take(self) -> bool:
        """Lock the folder unless a live run holds it; whether it is now held here."""
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return False
        return True

    def discard(self) -> None:
        """Remove the folder (its run has registered a version); it vanishes at once, renamed aside first."""
        with _guard(self.directory.parent):
            remove_tree(self.directory)

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._lock.release()


def begin(root: Path, run_id: str) -> RunFolder:
    """A new run's folder under ``root``, held. The interrupted runs' folders there go first, with a warning:
    starting afresh instead of resuming abandons them (left, they would pile up); live runs' are kept."""
    with _guard(root):
        sweep_stale_temporaries(root)
        (root / LATEST).unlink(missing_ok=True)  # the pointer of the layout without run folders
        for directory in _interrupted(root):
            logger.warning(
                "starting afresh: discarding the checkpoints of an interrupted run in %s", directory
            )
            remove_tree(directory)
        folder = RunFolder(root / run_id)
        folder.directory.mkdir()
        folder.take()  # nobody else can: a folder is taken only under the guard, and this one is new
        return folder


def claim_interrupted(root: Path, config_hash: str) -> RunFolder:
    """The interrupted run of this config with the newest checkpoint, held, for ``resume`` to continue;
    refused when there is none (a live run is never taken from its process)."""
    with _guard(root):
        resumable = [directory for directory in _interrupted(root) if (directory / LATEST).is_file()]
        written = [(directory, _pointer(directory)) for directory in resumable]
        written.sort(key=lambda item: (item[0] / LATEST).stat().st_mtime_ns, reverse=True)
        for directory, latest in written:
            if latest["config_hash"] == config_hash:
                folder = RunFolder(directory)
                folder.take()  # free: _interrupted found it so under the guard, which is still held
                return folder
    if written:
        directory, latest = written[0]
        raise ConfigError(
            f"the checkpoint in {directory} was written by a different config "
            f"(hash {latest['config_hash'][:12]}, this config {config_hash[:12]})",
            hint="resume with the same config and overrides, or train without resuming",
            parameter="resume",
        )
    raise ConfigError(
        f"no checkpoint of this config in {root}",
        hint="the last run finished, is still running or never started; train without resuming",
        parameter="resume",
    )


def _interrupted(root: Path) -> list[Path]:
    """The run folders under ``root`` that no live run holds. Call it under the guard: no run can take one
    then, so a folder found free stays free until the guard is let go."""
    found = []
    for directory in sorted(
        path for path in root.iterdir() if path.is_dir() and not path.name.startswith(".")
    ):
        with RunFolder(directory) as probe:
            if probe.take():
                found.append(directory)
    return found


@contextmanager
def _guard(root: Path) -> Iterator[None]:
    """Hold ``root/.lock`` while run folders are listed, made, taken or removed, so that none is seen half
    made and two runs never take the same one."""
    lock = FileLock(root / GUARD, thread_local=False, fallback_to_soft=False)
    try:
        lock.acquire(timeout=GUARD_TIMEOUT)
    except Timeout:
        raise TrainingError(
            f"{lock.lock_file} stayed locked for {GUARD_TIMEOUT:.0f} s",
            hint="another training process of this config is stuck: end it",
        ) from None
    try:
        yield
    finally:
        lock.release()
