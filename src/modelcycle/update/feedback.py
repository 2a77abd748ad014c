"""The labelled live traffic of a model: stored predictions (as the callers sent them) joined to the feedback
that arrived for them, as a dataset in the model's own features, oldest first."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from modelcycle.data import Dataset
from modelcycle.data.kinds import input_kind
from modelcycle.errors import ModelcycleError
from modelcycle.instances import instances_dataset
from modelcycle.monitor.database import open_database
from modelcycle.monitor.encryption import Keyring
from modelcycle.monitor.location import StoreLocation
from modelcycle.predictor import Predictor


def labelled_traffic(
    store: StoreLocation | str | Path, predictor: Predictor, *, since: float, keys: Keyring | None = None
) -> Dataset | None:
    """Every labelled prediction of the model since ``since`` whose inputs were stored in the caller's terms
    (``:predict`` instances; model-ready tensors cannot be turned back into features); None if none.
    ``keys`` read an encrypted store."""
    manifest = predictor.bundle.manifest
    with open_database(store, keys) as database:
        rows = database.labelled_inputs(manifest.name, since=since)
    instances, targets = [], []
    for instance, label, value in rows:
        if _raw(instance, predictor):
            instances.append(instance)
            targets.append(label if label is not None else value)
    if not instances:
        return None
    target = manifest.outputs.target or "target"
    try:
        dataset = instances_dataset(instances, predictor)
    except ModelcycleError as error:  # a stored row the model no longer accepts: say which store and why
        raise ModelcycleError(
            f"{store}: stored inputs of {manifest.name} do not fit {predictor.bundle.ref}: {error}"
        ) from None
    labels = predictor.task.feedback_targets(targets)
    return replace(
        dataset,
        source="feedback",
        task=manifest.task,
        frame=dataset.frame.assign(**{target: labels}),
        target=target,
        label_names=manifest.outputs.labels,
    )


def _raw(instance: object, predictor: Predictor) -> bool:
    schema = predictor.bundle.manifest.inputs
    return input_kind(schema.kind).accepts(instance, schema)
