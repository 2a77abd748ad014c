"""Turning a trained model into a registered version: the manifest, the bundle's files, registration."""

from __future__ import annotations

from torch import nn

from modelcycle.bundle import Architecture, Bundle, BundleManifest, Lineage, OutputSchema
from modelcycle.bundle.manifest import code_version
from modelcycle.config import PipelineConfig
from modelcycle.data import profile_dataset
from modelcycle.data.kinds import input_kind
from modelcycle.data.preprocess import CarriesFiles
from modelcycle.data.reference import Reference
from modelcycle.data.state import PreprocessFile
from modelcycle.monitor.embeddings import embed, embedding_profile
from modelcycle.pipeline.prepare import PreparedData
from modelcycle.pipeline.resolve import ResolvedPipeline
from modelcycle.registry import Registry
from modelcycle.tasks import TASKS, Task
from modelcycle.train import FitResult


def register_model(
    registry: Registry,
    config: PipelineConfig,
    resolved: ResolvedPipeline,
    data: PreparedData,
    task: Task,
    model: nn.Module,
    outcome: FitResult,
    metrics: dict[str, dict[str, float]],
    *,
    run_id: str,
    data_fingerprint: str,
    parent: str | None = None,
) -> Bundle:
    model, params = resolved.architecture.for_bundle(model, resolved.params)
    manifest = BundleManifest(
        name=config.name,
        task=data.task,
        architecture=Architecture(name=resolved.architecture.name, params=params.model_dump(mode="json")),
        inputs=data.preprocessor.input_schema(),
        outputs=OutputSchema(
            tensors=task.output_tensors(data.num_outputs),
            target=data.dataset.target,
            labels=data.encoder.classes_ or None,
        ),
        metrics=metrics,
        lineage=Lineage(
            run_id=run_id,
            data_source=data.dataset.source,
            data_fingerprint=data_fingerprint,
            config_hash=config.config_hash(),
            parent=parent,
            code_version=code_version(),
        ),
    )
    with registry.builder(config.name) as builder:
        builder.write_weights(model.state_dict())
        if isinstance(data.preprocessor, CarriesFiles):
            data.preprocessor.copy_files(builder.path)
        preprocess = PreprocessFile.model_validate(
            {"features": data.preprocessor.state(), "target": data.encoder.state()}
        )
        builder.write_json("preprocess.json", preprocess.to_json())
        builder.write_json("reference.json", reference_profile(data, model).to_json())
        builder.write_json("config.json", config.model_dump(mode="json"))
        history = {
            "best_epoch": outcome.best_epoch,
            "stopped_early": outcome.stopped_early,
            "epochs": outcome.history,
        }
        builder.write_json("history.json", history)
        reason = f"trained by run {run_id}" + (f", distilled from {parent}" if parent else "")
        return registry.register(builder, manifest, reason=reason)


EMBEDDING_ROWS = 1000


def reference_profile(data: PreparedData, model: nn.Module) -> Reference:
    """The training split's profile; for kinds drift sees through the model (text and images) also the
    model's embeddings of training rows, the reference that drift of what the model sees is measured
    against."""
    profile = profile_dataset(data.parts["train"])
    if input_kind(data.dataset.kind).embedded and TASKS.get(data.task)().row_outputs:
        inputs = {name: array[:EMBEDDING_ROWS] for name, array in data.tensors["train"].inputs.items()}
        embeddings = embed(model, inputs, data.num_outputs)
        if embeddings is not None and len(embeddings) > 1:
            profile.embedding = embedding_profile(embeddings)
    return profile
