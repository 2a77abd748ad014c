"""A candidate made from feedback: the production weights fine-tuned on the older part of the labelled live
traffic plus a replayed sample of the original training rows (so it does not forget them), then judged
against production on the same two holdouts — the original test split and the newest labelled traffic —
before it may be registered."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from modelcycle.config import PipelineConfig, UpdateConfig
from modelcycle.data import Dataset
from modelcycle.optimize.gate import Gate, GateResult
from modelcycle.predictor import Predictor, model_tensors, training_split
from modelcycle.train import TensorSet
from modelcycle.train.finetune import finetune


class HoldoutVerdict(BaseModel):
    """The gate on one holdout: production's figure (``base``) against the candidate's in ``metric``;
    ``delta`` is candidate − base, ``drop`` how much worse the candidate is (positive = worse)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    base: float
    candidate: float
    delta: float
    drop: float
    passed: bool

    @classmethod
    def of(cls, result: GateResult) -> HoldoutVerdict:
        return cls(
            metric=result.metric,
            base=result.base,
            candidate=result.candidate,
            delta=result.delta,
            drop=result.drop,
            passed=result.passed,
        )


class Judgement(BaseModel):
    """Candidate against production on both holdouts, and whether the candidate may go live: what
    ``modelcycle update --json`` prints under ``judgement`` and the registry's update events record."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    original_holdout: HoldoutVerdict  # the production version's own test split
    recent_traffic: HoldoutVerdict  # the newest labelled traffic, held out from fine-tuning
    margin: float
    passed: bool
    reason: str


@dataclass(frozen=True)
class Candidate:
    predictor: Predictor  # the fine-tuned network around production's preprocessing
    judgement: Judgement
    rows: dict[str, int]  # feedback, replay, recent holdout
    history: list[dict[str, float]]
    best_epoch: int


def split_traffic(traffic: Dataset, holdout_fraction: float) -> tuple[Dataset, Dataset]:
    """(older rows to learn from, newest rows to judge on): time order, so judging is on the future."""
    cut = round(len(traffic) * (1 - holdout_fraction))
    return traffic.take(np.arange(cut)), traffic.take(np.arange(cut, len(traffic)))


def make_candidate(current: Predictor, traffic: Dataset, settings: UpdateConfig) -> Candidate:
    """Fine-tune a copy of production (``current``, left as it is) on feedback plus replay, and judge it."""
    production = current.bundle
    config = PipelineConfig.model_validate(production.read_json("config.json"))
    learn, recent = split_traffic(traffic, settings.holdout_fraction)
    original_train = training_split(production, "train")
    rng = np.random.default_rng(config.seed)
    replay_rows = min(len(original_train), round(len(learn) * settings.replay_ratio))
    replay = original_train.take(rng.choice(len(original_train), size=replay_rows, replace=False))
    candidate = Predictor.load(production)
    rows = model_tensors(candidate.preprocessor, candidate.encoder, concat(learn, replay))
    validation = training_split(production, "valid")

    def validate(_model: Any) -> dict[str, float]:  # the model trains in place: it is candidate.model
        return candidate.measure(validation)

    outcome = finetune(
        candidate.model,
        candidate.task,
        TensorSet(rows.inputs, rows.training_targets),
        config.train,
        epochs=settings.epochs,
        seed=config.seed,
        validate=validate if len(validation) else None,
    )
    judgement = judge(current, candidate, training_split(production, "test"), recent, settings)
    counts = {"feedback": len(learn), "replay": len(replay), "recent_holdout": len(recent)}
    return Candidate(candidate, judgement, counts, outcome.history, outcome.best_epoch)


def judge(
    production: Predictor, candidate: Predictor, original: Dataset, recent: Dataset, settings: UpdateConfig
) -> Judgement:
    """Not worse than production by more than ``tolerance`` on either holdout, and better on recent traffic
    by more than ``margin`` (in the primary metric's direction)."""
    metric = production.task.primary_metric
    gate = Gate(max_drop=settings.tolerance)
    on_original = gate.judge(
        metric, production.measure(original)[metric], candidate.measure(original)[metric]
    )
    on_recent = gate.judge(metric, production.measure(recent)[metric], candidate.measure(recent)[metric])
    gain = -on_recent.drop  # how much better on recent traffic
    tolerance = f"(tolerance {settings.tolerance})"
    if not on_original.passed:
        reason = f"worse on the original holdout by {on_original.drop:.4f} {metric} {tolerance}"
    elif not on_recent.passed:
        reason = f"worse on recent traffic by {on_recent.drop:.4f} {metric} {tolerance}"
    elif gain <= settings.margin:
        reason = f"not better on recent traffic ({gain:+.4f} {metric}; needs more than {settings.margin})"
    else:
        reason = f"better on recent traffic by {gain:.4f} {metric}, within tolerance on the original holdout"
    passed = on_original.passed and on_recent.passed and gain > settings.margin
    return Judgement(
        metric=metric,
        original_holdout=HoldoutVerdict.of(on_original),
        recent_traffic=HoldoutVerdict.of(on_recent),
        margin=settings.margin,
        passed=passed,
        reason=reason,
    )


def concat(first: Dataset, second: Dataset) -> Dataset:
    """Rows of both (features and target), in that order."""
    columns = [*first.features, *([first.target] if first.target else [])]
    frame = pd.concat([first.frame[columns], second.frame[columns]], ignore_index=True)
    images = None
    if first.images is not None and second.images is not None:
        images = np.concatenate([first.images, second.images])
    return replace(first, source=f"{first.source}+{second.source}", frame=frame, images=images)
