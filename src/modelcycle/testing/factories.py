"""Tiny, deterministic objects for tests of modelcycle and of its plugins: a small dataset, a manifest and a
registered bundle, made in milliseconds without training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from modelcycle.bundle import Architecture, Bundle, BundleManifest, InputSchema, OutputSchema, TensorSpec
from modelcycle.data import Dataset
from modelcycle.registry import Registry
from modelcycle.schema import FeatureSpec, FeatureType


def tiny_dataset(rows: int = 60, seed: int = 0) -> Dataset:
    """A tabular two-class dataset: two numeric features (one with gaps), one categorical; ``y`` follows
    feature ``x1``."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=rows)
    x2 = rng.normal(size=rows)
    x2[::7] = np.nan
    frame = pd.DataFrame(
        {
            "x1": x1,
            "x2": x2,
            "colour": rng.choice(["red", "green", "blue"], size=rows),
            "label": np.where(x1 > 0, "yes", "no"),
        }
    )
    types: dict[str, FeatureType] = {"x1": "numeric", "x2": "numeric", "colour": "categorical"}
    return Dataset("tiny", "tabular", "classification", frame, "label", types, label_names=["no", "yes"])


def tiny_manifest(name: str = "tiny", features: int = 4, classes: int = 2) -> BundleManifest:
    return BundleManifest(
        name=name,
        task="classification",
        architecture=Architecture(name="linear", params={"in_features": features, "out_features": classes}),
        inputs=InputSchema(
            kind="tabular",
            features=[FeatureSpec(name=f"x{i}", type="numeric") for i in range(features)],
            tensors=[TensorSpec(name="features", dtype="float32", shape=[-1, features])],
        ),
        outputs=OutputSchema(
            tensors=[TensorSpec(name="logits", dtype="float32", shape=[-1, classes])],
            labels=[str(label) for label in range(classes)],
        ),
        metrics={"test": {"accuracy": 0.5}},
    )


def tiny_state_dict(features: int = 4, classes: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"weight": torch.randn(classes, features, generator=generator), "bias": torch.zeros(classes)}


def tiny_bundle(registry: Registry, name: str = "tiny", seed: int = 0) -> Bundle:
    """Register a linear-model bundle (weights, preprocess.json, reference.json) and return it."""
    with registry.builder(name) as builder:
        builder.write_weights(tiny_state_dict(seed=seed))
        builder.write_json(
            "preprocess.json", {"features": {"kind": "tabular"}, "target": {"task": "classification"}}
        )
        builder.write_json("reference.json", {"rows": 0, "features": {}})
        return registry.register(builder, tiny_manifest(name))
