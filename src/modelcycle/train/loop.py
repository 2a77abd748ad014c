"""The training loop: seeded shuffling, mini-batches with gradient accumulation and clipping, opt-in mixed
precision, a learning-rate schedule, validation each epoch, early stopping, the best epoch's weights kept,
and checkpoints from which a killed run continues bit for bit."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from modelcycle.config import TrainConfig
from modelcycle.errors import TrainingError
from modelcycle.inference import to_tensors
from modelcycle.memory import peak_rss_bytes, reset_peak_rss
from modelcycle.tasks import Task
from modelcycle.train.checkpoint import Progress, Snapshot, capture_rng, read_sharded, restore_rng
from modelcycle.train.distributed import Distributed
from modelcycle.train.monitor import Selection
from modelcycle.train.optimizers import OPTIMIZERS
from modelcycle.train.precision import autocast, check_precision, grad_scaler
from modelcycle.train.schedules import build_scheduler
from modelcycle.train.sharding import (
    checkpoint_activations,
    gather_full_model,
    load_sharded_state,
    shard,
    sharded_state,
    skeleton,
    state_bytes,
)

logger = logging.getLogger(__name__)
Record = dict[str, float]
EpochCallback = Callable[[int, Record], None]
StepCallback = Callable[[int, Record], None]
Validation = Callable[[nn.Module], Record]
CheckpointWriter = Callable[[Snapshot], None]


@dataclass(frozen=True)
class TensorSet:
    """Model inputs by tensor name (in the model's argument order) and the encoded targets, row-aligned."""

    inputs: dict[str, np.ndarray]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True)
class FitResult:
    best_epoch: int
    history: list[Record]
    samples_per_second: float
    stopped_early: bool
    global_step: int


@dataclass
class Hooks:
    """Optional callbacks: validation metrics per epoch, progress per epoch and per step, checkpoints."""

    validate: Validation | None = None
    on_epoch: EpochCallback | None = None
    on_step: StepCallback | None = None
    checkpoint: CheckpointWriter | None = None


class Trainer:
    """Trains one model on one device, or as one rank of a group: data-parallel (``ddp``: the whole model
    on every rank) or sharded (``fsdp``: each rank holds a shard). ``model`` is the trained model
    afterwards; after sharded training it is a plain module gathered on rank 0."""

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        config: TrainConfig,
        *,
        device: torch.device,
        distributed: Distributed | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        check_precision(config.precision, device)
        self.task = task
        self.config = config
        self.device = device
        self.distributed = distributed or Distributed()
        self.hooks = hooks or Hooks()
        self.sharded = config.strategy == "fsdp" and self.distributed.active
        if config.activation_checkpointing:
            checkpoint_activations(model)
        self._plain = skeleton(model) if self.sharded else None
        if self.sharded:  # each unit moves to the device as it is sharded: never the whole model at once
            shard(model, config.precision, device, self.distributed.world_size)
            self.model = self.network = model
        else:
            self.model = model.to(device)
            self.network = self.distributed.wrap(self.model, device)
        self.optimizer = OPTIMIZERS.get(config.optimizer.name, field="train.optimizer.name")(
            self.model.parameters(), config.optimizer
        )
        self.scaler = grad_scaler(config.precision, device)
        self.selection = Selection(task, config.early_stopping)

    def fit(self, train: TensorSet, generator: torch.Generator, resume: Snapshot | None = None) -> FitResult:
        """Train for ``config.epochs`` (or until early stopping); afterwards the model holds the best epoch's
        weights. ``resume`` continues from a checkpoint of the same config exactly where it was taken."""
        config = self.config
        batches_per_epoch = math.ceil(len(self.distributed.shard(np.arange(len(train)))) / config.batch_size)
        steps_per_epoch = math.ceil(batches_per_epoch / config.accumulate_steps)
        self.scheduler = build_scheduler(
            self.optimizer, config.schedule, steps_per_epoch=steps_per_epoch, epochs=config.epochs
        )
        progress, best_state = Progress(), None
        if resume is not None:
            progress, best_state = self._restore(resume, generator)
        targets = torch.from_numpy(train.targets)
        if not reset_peak_rss():  # the epochs' own peak, not the model's loading
            logger.info("the kernel keeps the peak RSS from the process's start; records count it")
        while progress.epoch < config.epochs and not progress.stopped_early:
            epoch_start = generator.get_state()
            order = self.distributed.shard(torch.randperm(len(train), generator=generator).numpy())
            batches = [
                order[start : start + config.batch_size] for start in range(0, len(order), config.batch_size)
            ]
            self.network.train()
            for index in range(progress.batch_in_epoch, len(batches)):
                last = index + 1 == len(batches)
                boundary = (index + 1) % config.accumulate_steps == 0 or last
                group_start = index - index % config.accumulate_steps
                group = min(
                    config.accumulate_steps, len(batches) - group_start
                )  # the epoch's last may be short
                self._train_batch(train, targets, batches[index], progress, boundary=boundary, group=group)
                progress.batch_in_epoch = index + 1
                if boundary and not last and self._checkpoint_due(progress):
                    self._checkpoint(progress, best_state, epoch_start)
            best_state = self._end_epoch(progress, best_state)
            self._checkpoint(progress, best_state, generator.get_state())
        if best_state is not None:
            self.model.load_state_dict(best_state)
        if self._plain is not None:
            gathered = gather_full_model(self.model, self._plain, is_main=self.distributed.is_main)
            self.model = gathered.to(self.device) if self.distributed.is_main else gathered
        speed = progress.rows_seen / progress.busy_seconds if progress.busy_seconds else 0.0
        return FitResult(
            progress.best_epoch, progress.history, speed, progress.stopped_early, progress.global_step
        )

    def _train_batch(
        self,
        train: TensorSet,
        targets: torch.Tensor,
        rows: np.ndarray,
        progress: Progress,
        *,
        boundary: bool,
        group: int,
    ) -> None:
        """Forward and backward one micro-batch of an accumulation ``group`` of that many micro-batches (its
        gradient is the group's mean); step the optimizer at the group's end."""
        started = time.perf_counter()
        with autocast("fp32" if self.sharded else self.config.precision, self.device):  # FSDP: its policy
            outputs = self.network(*to_tensors(train.inputs, rows, self.device))
            loss = self.task.loss(outputs.float(), targets[rows].to(self.device))
        finite = bool(torch.isfinite(loss))
        if (
            self.distributed.active
        ):  # every rank stops together, or the others would wait in the next all-reduce
            finite = self.distributed.sum(0.0 if finite else 1.0) == 0.0
        if not finite:
            raise TrainingError(
                f"epoch {progress.epoch + 1}, step {progress.global_step}: the loss became {loss.item()}",
                hint="lower train.optimizer.lr or check the data for extreme values",
            )
        self.scaler.scale(loss / group).backward()
        progress.epoch_loss_sum += loss.item() * len(rows)
        progress.epoch_rows += len(rows)
        if boundary:
            if self.config.grad_clip_norm is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            progress.global_step += 1
        progress.busy_seconds += time.perf_counter() - started
        progress.rows_seen += len(rows)
        if boundary and progress.global_step % self.config.log_every_steps == 0:
            step_loss = self.distributed.mean(loss.item())  # every rank: the group's loss, not rank 0's
            if self.hooks.on_step is not None:
                self.hooks.on_step(progress.global_step, {"train_loss_step": step_loss, "lr": self._lr()})

    def _end_epoch(
        self, progress: Progress, best_state: dict[str, torch.Tensor] | None
    ) -> dict[str, torch.Tensor] | None:
        rows = self.distributed.sum(progress.epoch_rows)
        record: Record = {
            "epoch": float(progress.epoch + 1),
            "train_loss": self.distributed.sum(progress.epoch_loss_sum) / max(rows, 1),
            "lr": self._lr(),
            "samples_per_second": progress.rows_seen / progress.busy_seconds
            if progress.busy_seconds
            else 0.0,
            # what one rank holds (the mean over ranks): with fsdp about 1/N of the whole state; the peak
            # resident memory since training started
            "state_bytes_per_rank": self.distributed.mean(float(state_bytes(self.model, self.optimizer))),
            "peak_rss_bytes_per_rank": self.distributed.mean(float(peak_rss_bytes())),
        }
        if self.hooks.validate is not None:
            record.update({f"valid_{key}": value for key, value in self.hooks.validate(self.model).items()})
        key = self.selection.key(record)
        if self.selection.improved_enough(key, progress.patience_reference) or not progress.history:
            progress.stale_epochs, progress.patience_reference = 0, list(key)
        else:
            progress.stale_epochs += 1
        better = list(key) > progress.best_key
        if self.sharded:  # each rank keeps its shards of the best weights: all must pick the same epoch
            better = self.distributed.sum(1.0 if better and self.distributed.is_main else 0.0) > 0
        if better:
            progress.best_key, progress.best_epoch = list(key), progress.epoch + 1
            best_state = self._copy_weights()
        progress.history.append(record)
        progress.epoch += 1
        progress.batch_in_epoch, progress.epoch_loss_sum, progress.epoch_rows = 0, 0.0, 0
        patience = self.selection.patience
        stop = patience is not None and progress.stale_epochs >= patience
        if self.distributed.active:  # ranks measure alike on CPU; on GPU tiny differences must not split them
            stop = self.distributed.sum(1.0 if stop else 0.0) > 0
        progress.stopped_early = stop
        logger.info("epoch %d: %s", progress.epoch, record)
        if self.hooks.on_epoch is not None:
            self.hooks.on_epoch(progress.global_step, record)
        return best_state

    def _checkpoint_due(self, progress: Progress) -> bool:
        every = self.config.checkpoint_every_steps
        return every is not None and progress.global_step % every == 0

    def _checkpoint(
        self, progress: Progress, best_state: dict[str, torch.Tensor] | None, epoch_order_state: torch.Tensor
    ) -> None:
        """Hand a snapshot to the checkpoint writer, if there is one. ``epoch_order_state`` is the data-order
        generator at the start of the epoch the snapshot is in (the next epoch's, at an epoch end)."""
        saved = progress
        if self.distributed.active:  # every rank gets here: the partial epoch's loss is saved as the group's
            saved = copy.copy(progress)
            saved.epoch_loss_sum = self.distributed.sum(progress.epoch_loss_sum)
            saved.epoch_rows = int(self.distributed.sum(progress.epoch_rows))
        if self.hooks.checkpoint is not None:
            self.hooks.checkpoint(self._snapshot(saved, best_state, epoch_order_state))

    def _copy_weights(self) -> dict[str, torch.Tensor]:
        """The model's weights as they are now: this rank's shards when sharded, else on the CPU."""
        state = self.model.state_dict().items()
        if self.sharded:
            return {name: value.detach().clone() for name, value in state}
        return {name: value.detach().cpu().clone() for name, value in state}

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _snapshot(
        self, progress: Progress, best_state: dict[str, torch.Tensor] | None, epoch_order_state: torch.Tensor
    ) -> Snapshot:
        model, optimizer = (
            sharded_state(self.model, self.optimizer)
            if self.sharded
            else (self._copy_weights(), self.optimizer.state_dict())
        )
        return Snapshot(
            progress=copy.deepcopy(progress),
            model=model,
            best_model=best_state,
            optimizer=optimizer,
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            epoch_order_state=epoch_order_state,
            rng=capture_rng(),
            sharded=self.sharded,
        )

    def _restore(
        self, snapshot: Snapshot, generator: torch.Generator
    ) -> tuple[Progress, dict[str, torch.Tensor] | None]:
        if snapshot.sharded != self.sharded:

            def how(sharded: bool) -> str:
                return "sharded (train.strategy: fsdp, several processes)" if sharded else "not sharded"

            raise TrainingError(
                f"the checkpoint was written {how(snapshot.sharded)}; this run is {how(self.sharded)}",
                hint="resume with the processes and train.strategy that wrote it, or train afresh",
            )
        if snapshot.sharded:
            model, optimizer = sharded_state(self.model, self.optimizer)  # the shapes to read into
            read_sharded(snapshot, model, optimizer)
            load_sharded_state(self.model, self.optimizer, snapshot.model, snapshot.optimizer)
        else:
            self.model.load_state_dict(snapshot.model)
            self.optimizer.load_state_dict(snapshot.optimizer)
        self.scheduler.load_state_dict(snapshot.scheduler)
        self.scaler.load_state_dict(snapshot.scaler)
        generator.set_state(snapshot.epoch_order_state)
        restore_rng(snapshot.rng)
        progress = snapshot.progress
        if not self.distributed.is_main:  # the group's partial-epoch totals were saved once, on rank 0's side
            progress.epoch_loss_sum, progress.epoch_rows = 0.0, 0
        return progress, snapshot.best_model
