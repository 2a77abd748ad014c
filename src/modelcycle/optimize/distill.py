"""Knowledge distillation: a student (any config over the same data and classes) learns from the teacher's
softened outputs as well as the labels, loss = α·T²·KL(teacher_T ‖ student_T) + (1−α)·CE(student, label),
and registers as its own version whose lineage names the teacher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional

from modelcycle.bench.timing import latency_ms
from modelcycle.bundle import Bundle
from modelcycle.config import PipelineConfig
from modelcycle.data.dataset import Dataset
from modelcycle.errors import ConfigError
from modelcycle.optimize.gate import Gate
from modelcycle.pipeline import TrainResult, train
from modelcycle.predictor import Predictor, model_tensors, training_split
from modelcycle.registry import Registry
from modelcycle.tasks import TASKS, Task


class Distilled:
    """A classification task whose training targets are (teacher logits | class id) per row; everything but
    the loss — metrics, selection, output schema — is the student's own task."""

    def __init__(self, task: Task, *, alpha: float, temperature: float) -> None:
        self.task, self.alpha, self.temperature = task, alpha, temperature
        self.name, self.primary_metric = task.name, task.primary_metric

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        teacher_logits, labels = targets[:, :-1], targets[:, -1].long()
        t = self.temperature
        soft = functional.kl_div(
            functional.log_softmax(outputs / t, dim=-1),
            functional.log_softmax(teacher_logits / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
        return self.alpha * t * t * soft + (1 - self.alpha) * self.task.loss(outputs, labels)

    def __getattr__(self, name: str) -> Any:
        """Everything but the loss is the student's task's own (metrics, selection, outputs, answers)."""
        return getattr(self.task, name)


class BundleTeacher:
    """A registered classifier as a teacher: its logits on the student's own training rows (read through
    the teacher's own preprocessing, so teacher and student may see the data differently)."""

    def __init__(self, bundle: Bundle, *, alpha: float, temperature: float) -> None:
        self.predictor = Predictor.load(bundle)
        self.ref = bundle.ref
        self.alpha, self.temperature = alpha, temperature

    def guide(self, task: Task) -> Task:
        return Distilled(task, alpha=self.alpha, temperature=self.temperature)

    def targets(self, rows: Dataset, labels: np.ndarray) -> np.ndarray:
        logits = self.predictor.outputs(rows).astype(np.float32)
        return np.concatenate([logits, labels.astype(np.float32)[:, None]], axis=1)


@dataclass(frozen=True)
class DistillResult:
    """The student beside its teacher, both measured on the student's test split."""

    teacher: str
    student: str
    metric: str
    teacher_value: float
    student_value: float
    delta: float
    verdict: str
    teacher_size_bytes: int
    student_size_bytes: int
    teacher_p50_ms: float
    student_p50_ms: float
    student_metrics: dict[str, float]


def distill(
    teacher: Bundle,
    student: PipelineConfig,
    registry: Registry,
    *,
    alpha: float = 0.5,
    temperature: float = 2.0,
    gate: Gate | None = None,
) -> DistillResult:
    """Train ``student`` guided by ``teacher``, register it, and compare the two on the student's test rows
    (accuracy through the gate, size, latency at batch 1). The student must predict the same classes."""
    trained = _train_student(teacher, student, registry, alpha=alpha, temperature=temperature)
    student_bundle = registry.open(trained.ref)
    rows = training_split(student_bundle, "test")
    judged = {}
    timing = {}
    for role, bundle in (("teacher", teacher), ("student", student_bundle)):
        predictor = Predictor.load(bundle)
        judged[role] = predictor.measure(rows)
        one_row = {
            name: array[:1]
            for name, array in model_tensors(predictor.preprocessor, predictor.encoder, rows).inputs.items()
        }
        timing[role] = latency_ms(predictor.model, one_row, warmup=3, max_calls=200, max_seconds=1.0)["p50"]
    metric = TASKS.get(teacher.manifest.task).primary_metric
    outcome = (gate or Gate()).judge(metric, judged["teacher"][metric], judged["student"][metric])
    return DistillResult(
        teacher=teacher.ref,
        student=trained.ref,
        metric=metric,
        teacher_value=outcome.base,
        student_value=outcome.candidate,
        delta=outcome.delta,
        verdict=outcome.verdict,
        teacher_size_bytes=teacher.weights_bytes,
        student_size_bytes=student_bundle.weights_bytes,
        teacher_p50_ms=timing["teacher"],
        student_p50_ms=timing["student"],
        student_metrics=judged["student"],
    )


def _train_student(
    teacher: Bundle, student: PipelineConfig, registry: Registry, *, alpha: float, temperature: float
) -> TrainResult:
    if not TASKS.get(teacher.manifest.task)().single_label:  # soft targets are one class distribution a row
        raise ConfigError(
            f"{teacher.ref}: distillation needs a classification teacher, not {teacher.manifest.task}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"{alpha} is not in [0, 1]", parameter="alpha")
    if temperature <= 0:
        raise ConfigError(f"{temperature} is not above 0", parameter="temperature")
    _check_classes(teacher, student)
    result = train(student, registry, teacher=BundleTeacher(teacher, alpha=alpha, temperature=temperature))
    if result is None:  # only ranks other than 0 of a distributed run get None; distill runs in one process
        raise ConfigError("distillation does not run under torchrun")
    return result


def _check_classes(teacher: Bundle, student: PipelineConfig) -> None:
    """The student's classes, as its data will have them, must be the teacher's, in the same order."""
    from modelcycle.data import load_dataset

    dataset = load_dataset(student.data, seed=student.seed)
    theirs = teacher.manifest.outputs.labels or []
    ours = dataset.label_names or []
    if [str(label) for label in ours] != [str(label) for label in theirs]:
        raise ConfigError(
            f"{student.name}: the student's classes {ours} differ from the teacher's {theirs} "
            f"({teacher.ref})",
            hint="distill on data with the teacher's target column and classes",
        )
