"""The only place that knows the order of the stages: validate a config, then load → split → fit
preprocessing → train → evaluate → profile → bundle → register."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from torch import nn

from modelcycle.bundle import Architecture, BundleManifest, Lineage, OutputSchema
from modelcycle.config import PipelineConfig, TaskName
from modelcycle.data import fingerprint, load_dataset, make_preprocessor, profile_dataset, split_dataset
from modelcycle.data.builtin import BUILTINS
from modelcycle.data.dataset import Dataset
from modelcycle.data.imbalance import balanced_class_weights, oversample
from modelcycle.data.preprocess import CarriesFiles, Preprocessor, TargetEncoder
from modelcycle.data.sources import split_source
from modelcycle.devices import pick_device
from modelcycle.errors import ConfigError
from modelcycle.models import ARCHITECTURES, ArchitectureEntry, Params
from modelcycle.predictor import finite_metrics, metric_targets
from modelcycle.registry import Registry
from modelcycle.seeding import seed_everything
from modelcycle.tasks import TASKS, Task
from modelcycle.train import OPTIMIZERS, TensorSet, fit, predict
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


def code_version() -> str:
    try:
        return f"modelcycle {version('modelcycle')}"
    except PackageNotFoundError:
        return "modelcycle (not installed)"


@dataclass(frozen=True)
class ResolvedPipeline:
    """A config whose names all resolved: the architecture and its checked parameters."""

    architecture: ArchitectureEntry
    params: Params


def validate(config: PipelineConfig) -> ResolvedPipeline:
    """Resolve every name in the config (architecture and its parameters, optimizer, task, data source,
    device) so that mistakes surface before any data is read or any weight is trained."""
    entry = ARCHITECTURES.get(config.model.arch, field="model.arch")
    params = entry.check_params(config.model.params)
    OPTIMIZERS.get(config.train.optimizer.name, field="train.optimizer.name")
    if config.data.task is not None:
        TASKS.get(config.data.task, field="data.task")
    scheme, location = split_source(config.data.source)
    if scheme == "builtin":
        BUILTINS.get(location, field="data.source")
    pick_device(config.train.device)
    return ResolvedPipeline(entry, params)


def train(
    config: PipelineConfig, registry: Registry, *, on_epoch: EpochCallback | None = None
) -> TrainResult:
    """Train the configured model on its data and register the result as a new version. Data problems
    surface before a run is recorded; a run that fails after that is recorded as failed."""
    resolved = validate(config)
    dataset = load_dataset(config.data, seed=config.seed)
    task_name = dataset.task
    if task_name is None:
        raise ConfigError(
            f"data.target: {dataset.source} needs a target column to train on",
            hint="set data.target to the column to predict",
        )
    resolved.architecture.check_input(dataset.kind, dataset.source)
    data = prepare_data(config, dataset, task_name)
    data_fingerprint = fingerprint(dataset)
    run_id = registry.runs.start(
        config.name,
        config.model_dump(mode="json"),
        config_hash=config.config_hash(),
        data_fingerprint=data_fingerprint,
    )
    try:
        result = _train_and_register(config, resolved, data, registry, run_id, data_fingerprint, on_epoch)
    except BaseException as error:
        registry.runs.finish(run_id, "failed", error=str(error) or type(error).__name__)
        raise
    registry.runs.finish(run_id, "finished", model_ref=result.ref)
    return result


@dataclass(frozen=True)
class PreparedData:
    """The split dataset, the preprocessing fitted on its training part, and every part as tensors."""

    dataset: Dataset
    task: TaskName
    parts: dict[str, Dataset]
    preprocessor: Preprocessor
    encoder: TargetEncoder
    tensors: dict[str, TensorSet]

    def metrics(self, task: Task, model: nn.Module, part: str) -> dict[str, float]:
        """The task's metrics of ``model`` on one part, in the target's own units; non-finite values (e.g.
        R² of a single row) are left out."""
        outputs = self.encoder.inverse(predict(model, self.tensors[part].inputs))
        return finite_metrics(task, metric_targets(self.encoder, self.parts[part]), outputs)


def prepare_data(config: PipelineConfig, dataset: Dataset, task_name: TaskName) -> PreparedData:
    """Split, fit preprocessing and label encoding on the training part only, and transform every part."""
    split = split_dataset(dataset, config.data.split, config.seed)
    parts = {name: dataset.take(rows) for name, rows in split.parts().items()}
    preprocessor = make_preprocessor(dataset.kind, config.data.preprocess).fit(parts["train"])
    encoder = TargetEncoder(task_name).fit(parts["train"])
    tensors = {name: _tensors(part, preprocessor, encoder) for name, part in parts.items() if len(part)}
    return PreparedData(dataset, task_name, parts, preprocessor, encoder, tensors)


def _train_and_register(
    config: PipelineConfig,
    resolved: ResolvedPipeline,
    data: PreparedData,
    registry: Registry,
    run_id: str,
    data_fingerprint: str,
    on_epoch: EpochCallback | None,
) -> TrainResult:
    generator = seed_everything(config.seed)
    num_classes = len(data.encoder.classes_)
    task, train_set = _imbalance(config, data.task, data.tensors["train"], num_classes)
    inputs = data.preprocessor.input_schema()
    model = resolved.architecture.build(inputs, task.output_dim(num_classes), resolved.params)

    def log_epoch(epoch: int, record: dict[str, float]) -> None:
        registry.runs.log_metrics(run_id, record, step=epoch)
        if on_epoch is not None:
            on_epoch(epoch, record)

    def validate_model(candidate: nn.Module) -> dict[str, float]:
        return data.metrics(task, candidate, "valid")

    outcome = fit(
        model,
        task,
        train_set,
        config.train,
        generator=generator,
        device=pick_device(config.train.device),
        validate=validate_model if "valid" in data.tensors else None,
        on_epoch=log_epoch,
    )
    metrics = {part: data.metrics(task, model, part) for part in data.tensors}
    final = {f"{part}_{key}": value for part, values in metrics.items() for key, value in values.items()}
    registry.runs.log_metrics(run_id, final, step=config.train.epochs + 1)

    manifest = BundleManifest(
        name=config.name,
        task=data.task,
        architecture=Architecture(
            name=resolved.architecture.name, params=resolved.params.model_dump(mode="json")
        ),
        inputs=inputs,
        outputs=OutputSchema(
            tensors=task.output_tensors(num_classes),
            target=data.dataset.target,
            labels=data.encoder.classes_ or None,
        ),
        metrics=metrics,
        lineage=Lineage(
            run_id=run_id,
            data_source=data.dataset.source,
            data_fingerprint=data_fingerprint,
            config_hash=config.config_hash(),
            code_version=code_version(),
        ),
    )
    with registry.builder(config.name) as builder:
        builder.write_weights(model.state_dict())
        if isinstance(data.preprocessor, CarriesFiles):
            data.preprocessor.copy_files(builder.path)
        builder.write_json(
            "preprocess.json", {"features": data.preprocessor.state(), "target": data.encoder.state()}
        )
        builder.write_json("reference.json", profile_dataset(data.parts["train"]))
        builder.write_json("config.json", config.model_dump(mode="json"))
        builder.write_json("history.json", {"best_epoch": outcome.best_epoch, "epochs": outcome.history})
        bundle = registry.register(builder, manifest, reason=f"trained by run {run_id}")
    logger.info("registered %s (%s)", bundle.ref, metrics.get("test"))
    return TrainResult(
        bundle.ref, run_id, bundle.path, metrics, outcome.best_epoch, outcome.samples_per_second
    )


def _tensors(part: Dataset, preprocessor: Preprocessor, encoder: TargetEncoder) -> TensorSet:
    return TensorSet(preprocessor.transform(part), encoder.transform(part))


def _imbalance(
    config: PipelineConfig, task_name: TaskName, train_set: TensorSet, num_classes: int
) -> tuple[Task, TensorSet]:
    """The task (with class weights if asked) and the training tensors (oversampled if asked)."""
    strategy = config.data.imbalance if task_name == "classification" else "none"
    weights = balanced_class_weights(train_set.targets, num_classes) if strategy == "class_weights" else None
    task = TASKS.get(task_name)(class_weights=weights)
    if strategy == "oversample":
        rows = oversample(np.arange(len(train_set)), train_set.targets, config.seed)
        train_set = TensorSet(
            {key: value[rows] for key, value in train_set.inputs.items()}, train_set.targets[rows]
        )
    return task, train_set
