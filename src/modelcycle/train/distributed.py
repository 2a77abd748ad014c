"""Data-parallel training with torch.distributed: gloo on CPU, nccl on CUDA. Processes are started by
torchrun (``modelcycle train --nproc N`` runs it for you); each takes an equal share of every epoch's
shuffled rows, gradients are averaged by DistributedDataParallel, and only rank 0 writes anything."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from modelcycle.errors import ConfigError


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    # where collective operations put their tensors (NCCL: the GPU)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def shard(self, order: np.ndarray) -> np.ndarray:
        """This rank's rows of an epoch's order, padded by wrapping around so every rank runs the same number
        of batches (as torch's DistributedSampler does)."""
        if not self.active:
            return order
        per_rank = -(-len(order) // self.world_size)
        padded = np.resize(order, per_rank * self.world_size)
        return padded[self.rank :: self.world_size]

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        if not self.active:
            return model
        ids = [device.index] if device.type == "cuda" and device.index is not None else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def sum(self, value: float) -> float:
        if not self.active:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return float(tensor.item())

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks (every rank must call it)."""
        return self.sum(value) / self.world_size

    def require_same(self, value: str, what: str, *, hint: str) -> None:
        """Fail every rank together unless all of them hold rank 0's ``value`` (a config hash, say): a node
        started with another config would otherwise train something else into the same model."""
        if not self.active:
            return
        expected = self.broadcast_text(value)
        differing = int(self.sum(0.0 if value == expected else 1.0))
        if differing:
            mine = "" if value == expected else f"; this rank (rank {self.rank}) has {value[:12]}"
            raise ConfigError(
                f"{differing} of {self.world_size} ranks have a different {what} than rank 0 "
                f"({expected[:12]}{mine})",
                hint=hint,
            )

    def require_all(self, ok: bool, message: str, *, hint: str) -> None:
        """Fail every rank together when ``ok`` is false on any of them (each says whether it is)."""
        failing = int(self.sum(0.0 if ok else 1.0))
        if failing:
            where = "" if ok else f" (rank {self.rank} among them)"
            raise ConfigError(f"{failing} of {self.world_size} ranks: {message}{where}", hint=hint)

    def broadcast_text(self, text: str) -> str:
        """Rank 0's ``text`` on every rank (each passes its own; only rank 0's is read). Bytes in a tensor,
        not ``broadcast_object_list``, which pickles."""
        if not self.active:
            return text
        data = torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8, device=self.device)
        size = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        dist.broadcast(size, src=0)
        if not self.is_main:
            data = torch.empty(int(size.item()), dtype=torch.uint8, device=self.device)
        dist.broadcast(data, src=0)
        return bytes(data.tolist()).decode("utf-8")


def from_environment(device: torch.device) -> tuple[Distributed, torch.device]:
    """The process group torchrun describes in the environment, or one a launcher has already initialised
    (Ray Train), or a single process; initialised once, and this rank's device: on CUDA each rank takes the
    GPU of its local rank."""
    started = dist.is_available() and dist.is_initialized()
    world_size = dist.get_world_size() if started else int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), world_size, local_rank, device), device


def shutdown(*, together: bool) -> None:
    """Leave the process group. ``together`` (after success): wait for every rank first, so that no rank
    tears its connections down while rank 0 is still registering (a rank that left early was seen to make
    gloo abort the others); after a failure, leave at once."""
    if not dist.is_initialized():
        return
    try:
        if together:
            dist.barrier()
    finally:
        dist.destroy_process_group()


def launch(nproc: int, argv: list[str], *, home: Path | None = None) -> int:
    """Run ``python -m modelcycle ARGV`` in ``nproc`` processes with torchrun on this machine (the registry
    folder passed on through MODELCYCLE_HOME); the exit code is the first failing process's."""
    if nproc < 1:
        raise ConfigError(f"must be at least 1, got {nproc}", parameter="nproc")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    environment = {**os.environ, **({"MODELCYCLE_HOME": str(home)} if home is not None else {})}
    return subprocess.call([*command, "-m", "modelcycle", *argv], env=environment)
