"""From a loaded dataset to training tensors: split, preprocessing and label encoding fitted on the training
part only, and the class-imbalance remedy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from torch import nn

from modelcycle.config import PipelineConfig, TaskName
from modelcycle.data import make_preprocessor, split_dataset
from modelcycle.data.dataset import Dataset
from modelcycle.data.imbalance import balanced_class_weights, oversample
from modelcycle.data.preprocess import Preprocessor, TargetEncoder
from modelcycle.predictor import finite, model_tensors
from modelcycle.tasks import TASKS, Task
from modelcycle.train import TensorSet


@dataclass(frozen=True)
class PreparedData:
    """The split dataset, the preprocessing fitted on its training part, and every part as tensors."""

    dataset: Dataset
    task: TaskName
    parts: dict[str, Dataset]
    preprocessor: Preprocessor
    encoder: TargetEncoder
    tensors: dict[str, TensorSet]
    metric_targets: dict[str, np.ndarray]

    @property
    def num_classes(self) -> int:
        return len(self.encoder.classes_)

    def metrics(self, task: Task, model: nn.Module, part: str) -> dict[str, float]:
        """The task's metrics of ``model`` on one part, in the target's own units."""
        tensors = self.tensors[part]
        return finite(task.measure(model, tensors.inputs, self.metric_targets[part], self.encoder.inverse))

    @property
    def num_outputs(self) -> int:
        """What the task sizes its output head by: classes, labels, or the vocabulary of a language model."""
        vocabulary = self.preprocessor.input_schema().vocab_size
        return TASKS.get(self.task)().num_outputs(self.encoder.coding, vocabulary)


def prepare_data(config: PipelineConfig, dataset: Dataset, task_name: TaskName) -> PreparedData:
    split = split_dataset(dataset, config.data.split, config.seed)
    parts = {name: dataset.take(rows) for name, rows in split.parts().items()}
    preprocessor = make_preprocessor(dataset.kind, config.data.preprocess).fit(parts["train"])
    encoder = TargetEncoder(task_name).fit(parts["train"])
    converted = {
        name: model_tensors(preprocessor, encoder, part) for name, part in parts.items() if len(part)
    }
    tensors = {name: TensorSet(item.inputs, item.training_targets) for name, item in converted.items()}
    metric_targets = {name: item.metric_targets for name, item in converted.items()}
    return PreparedData(dataset, task_name, parts, preprocessor, encoder, tensors, metric_targets)


class Teacher(Protocol):
    """A trained model that guides this training (knowledge distillation): it changes the loss and adds its
    own outputs to each training row's target."""

    ref: str

    def guide(self, task: Task) -> Task: ...

    def targets(self, rows: Dataset, labels: np.ndarray) -> np.ndarray: ...


def task_and_training_rows(
    config: PipelineConfig, data: PreparedData, teacher: Teacher | None = None
) -> tuple[Task, TensorSet]:
    """The task (with balanced class weights if asked) and the training tensors (oversampled if asked);
    with a ``teacher``, its loss and its targets."""
    train_set = data.tensors["train"]
    strategy = config.data.imbalance if TASKS.get(data.task)().single_label else "none"
    weights = (
        balanced_class_weights(train_set.targets, data.num_classes) if strategy == "class_weights" else None
    )
    task = TASKS.get(data.task)(class_weights=weights)
    rows = np.arange(len(train_set))
    if strategy == "oversample":
        rows = oversample(rows, train_set.targets, config.seed)
    targets = train_set.targets
    if teacher is not None:
        task = teacher.guide(task)
        targets = teacher.targets(data.parts["train"], targets)
    if strategy == "oversample" or teacher is not None:
        train_set = TensorSet({key: value[rows] for key, value in train_set.inputs.items()}, targets[rows])
    return task, train_set
