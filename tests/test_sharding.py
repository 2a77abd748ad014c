"""The pieces of sharded training that run in one process: activation checkpointing per transformer block
(same gradients, same parameter names), the refusals, and a model sharded over a group of one and gathered
back whole with its tied weights still tied."""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

from modelcycle.config import load_config
from modelcycle.errors import ConfigError
from modelcycle.memory import peak_rss_bytes, reset_peak_rss
from modelcycle.models.gpt import GPT, GPTParams
from modelcycle.models.mlp import MLP, MLPParams
from modelcycle.pipeline.resolve import validate
from modelcycle.train.sharding import (
    checkpoint_activations,
    gather_full_model,
    shard,
    skeleton,
    state_bytes,
)
from tests.test_trainer import CANCER


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(50, GPTParams(embed_dim=32, num_layers=3, num_heads=4, context_length=16, dropout=0.2))


def loss_and_gradients(model: nn.Module) -> tuple[float, dict[str, torch.Tensor]]:
    torch.manual_seed(7)  # the dropout masks
    tokens = torch.randint(0, 50, (4, 16), generator=torch.Generator().manual_seed(1))
    loss = model(tokens).logsumexp(-1).mean()
    loss.backward()
    return float(loss.detach()), {
        name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None
    }


def test_activation_checkpointing_recomputes_to_the_same_gradients() -> None:
    plain, recomputed = tiny_gpt(), tiny_gpt()
    checkpoint_activations(recomputed)
    assert recomputed.state_dict().keys() == plain.state_dict().keys()  # bundles and checkpoints unchanged
    loss, gradients = loss_and_gradients(plain)
    recomputed_loss, recomputed_gradients = loss_and_gradients(recomputed)
    assert recomputed_loss == loss  # dropout drew the same masks on recomputation
    assert gradients.keys() == recomputed_gradients.keys()
    assert all(torch.equal(gradients[name], recomputed_gradients[name]) for name in gradients)


def test_activation_checkpointing_needs_transformer_blocks() -> None:
    with pytest.raises(ConfigError, match="'mlp' has no transformer blocks"):
        validate(load_config(CANCER, ["train.activation_checkpointing=true"]))
    with pytest.raises(ConfigError, match="the MLP network has no transformer blocks"):
        checkpoint_activations(MLP(4, 2, MLPParams(hidden=[8])))  # a plugin's network, say


def test_sharding_refuses_fp16_and_buffers_it_cannot_keep_in_step() -> None:
    with pytest.raises(ConfigError, match="train: strategy fsdp offers no loss scaling for fp16"):
        load_config(CANCER, ["train.strategy=fsdp", "train.precision=fp16"])
    with pytest.raises(ConfigError, match="use bf16"):
        shard(tiny_gpt(), "fp16", torch.device("cpu"), 2)
    with_statistics = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    with pytest.raises(ConfigError, match=r"keeps no buffers in step .* 1\.running_mean"):
        shard(with_statistics, "fp32", torch.device("cpu"), 2)


@pytest.fixture
def group_of_one(tmp_path: Path) -> Iterator[None]:
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.usefixtures("group_of_one")
def test_a_sharded_model_is_gathered_into_a_plain_one_with_its_ties() -> None:
    model, reference = tiny_gpt(), tiny_gpt()
    plain = skeleton(model)
    assert all(parameter.is_meta for parameter in plain.parameters())
    shard(model, "fp32", torch.device("cpu"), 1)
    optimizers = [torch.optim.AdamW(network.parameters(), lr=1e-2) for network in (model, reference)]
    for network, optimizer in zip((model, reference), optimizers, strict=True):  # one step, sharded or not
        loss_and_gradients(network)
        optimizer.step()
    # weights, gradients and two moments per parameter (tied ones counted once), and AdamW's step counters
    parameters = list(reference.parameters())
    assert state_bytes(model, optimizers[0]) == 16 * sum(p.numel() for p in parameters) + 4 * len(parameters)
    gathered = gather_full_model(model, plain, is_main=True)
    assert type(gathered) is GPT
    assert gathered.head.weight is gathered.token_embedding.weight
    assert not any(isinstance(p, DTensor) for p in gathered.parameters())
    expected = reference.state_dict()
    assert gathered.state_dict().keys() == expected.keys()
    for name, value in gathered.state_dict().items():
        assert torch.allclose(value, expected[name], atol=1e-6), name


def test_the_peak_resident_memory_counts_from_a_reset_where_the_kernel_allows_it() -> None:
    # 300 MiB touched, then given back to the kernel: an anonymous map, which unmapping surely returns (a
    # freed numpy array may stay in the allocator's heap once earlier tests have grown it, and the resident
    # memory with it)
    block = mmap.mmap(-1, 300 * 2**20)
    block.write(b"\x01" * len(block))
    block.close()
    before = peak_rss_bytes()
    assert before > 300 * 2**20
    if reset_peak_rss():
        assert before - peak_rss_bytes() > 250 * 2**20
    else:  # refused or ignored (a sandboxed /proc, no /proc): the peak still counts from the start
        assert peak_rss_bytes() >= before
