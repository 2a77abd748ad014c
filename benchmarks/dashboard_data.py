"""A registry and prediction store the size of a busy team's, for the dashboard benchmark: one model with
1,000 versions (each registered through the registry, a chain of parents, production and previous aliases,
metrics that drift from version to version), 10,000 training runs with 20 epochs of 8 metrics each, and
1,000,000 stored predictions over the last 7 days with a monitoring round's quality and drift figures every
5 minutes and an alert now and then.

Run alone: .venv/bin/python benchmarks/dashboard_data.py HOME  (about 3 minutes on 2 cores)
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from modelcycle.bundle.io import MANIFEST
from modelcycle.config import load_config
from modelcycle.monitor.database import open_database
from modelcycle.monitor.location import StoreLocation
from modelcycle.monitor.predictions import DriftRow, QualityRow
from modelcycle.pipeline import train
from modelcycle.registry import Registry
from modelcycle.registry import db as tables

ROOT = Path(__file__).resolve().parents[1]
MODEL = "breast-cancer-mlp"
EPOCHS = 20
RUN_METRICS = (
    "train_loss",
    "lr",
    "valid_accuracy",
    "valid_f1_macro",
    "valid_log_loss",
    "valid_roc_auc",
    "samples_per_second",
    "epoch",
)
ROUND_S = 300.0
FEATURES = 31
BATCH = 20_000


def generate(
    home: Path, *, versions: int = 1000, runs: int = 10_000, predictions: int = 1_000_000, days: float = 7.0
) -> None:
    rng = np.random.default_rng(0)
    registry = Registry(home)
    try:
        train(load_config(ROOT / "examples" / "breast-cancer-mlp.yaml", ["train.epochs=1"]), registry)
        _versions(registry, versions, rng)
        _runs(registry, runs, rng)
        _events(registry, rng)
    finally:
        registry.close()
    _store(StoreLocation(home / "monitor.db"), versions, predictions, days, rng)


def _versions(registry: Registry, count: int, rng: np.random.Generator) -> None:
    """Versions 2..count, each a copy of version 1's files registered with its parent and its own metrics."""
    first = registry.open(f"{MODEL}@1")
    for number in range(2, count + 1):
        accuracy = float(np.clip(0.9 + 0.05 * np.sin(number / 40) + rng.normal(0, 0.01), 0, 1))
        metrics = {
            split: {
                "accuracy": accuracy - shift,
                "f1_macro": accuracy - shift - 0.01,
                "log_loss": 1 - accuracy,
            }
            for split, shift in (("train", -0.02), ("valid", 0.0), ("test", 0.005))
        }
        manifest = first.manifest.model_copy(
            update={
                "version": None,
                "metrics": metrics,
                "lineage": first.manifest.lineage.model_copy(update={"parent": f"{MODEL}@{number - 1}"}),
            }
        )
        with registry.builder(MODEL) as builder:
            for path in first.path.iterdir():
                if path.is_file() and path.name != MANIFEST:
                    shutil.copy2(path, builder.path / path.name)
            registry.register(builder, manifest, actor="bench", reason="generated")
        if number % 100 == 0:
            registry.set_alias(f"{MODEL}@{number}", "production", actor="bench", reason="generated release")


def _runs(registry: Registry, count: int, rng: np.random.Generator) -> None:
    """Runs written in bulk into the registry's tables, as ``RunStore`` would write them one by one."""
    start = time.time() - 30 * 86400
    with tables.write(registry.engine) as connection:
        for block in range(0, count, 1000):
            run_rows, metric_rows = [], []
            for index in range(block, min(block + 1000, count)):
                run_id = uuid.uuid4().hex
                lr = float(10 ** rng.uniform(-4, -2))
                started = start + index * 250
                run_rows.append(
                    {
                        "id": run_id,
                        "name": f"config-{index % 25}",
                        "status": "failed" if index % 97 == 0 else "finished",
                        "params": json.dumps(
                            {
                                "seed": index % 3,
                                "train": {"epochs": EPOCHS, "optimizer": {"lr": lr}},
                                "model": {"params": {"hidden": [int(rng.choice([32, 64, 128]))]}},
                            },
                            sort_keys=True,
                        ),
                        "config_hash": uuid.uuid4().hex,
                        "data_fingerprint": "f" * 64,
                        "model_ref": None,
                        "error": None,
                        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(started)),
                        "ended_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(started + 200)),
                    }
                )
                for epoch in range(1, EPOCHS + 1):
                    for key in RUN_METRICS:
                        value = (
                            float(np.exp(-epoch / 5) + rng.normal(0, 0.01)) if "loss" in key else float(epoch)
                        )
                        metric_rows.append({"run_id": run_id, "step": epoch * 12, "key": key, "value": value})
            connection.execute(tables.runs.insert(), run_rows)
            connection.execute(tables.metrics.insert(), metric_rows)


def _events(registry: Registry, rng: np.random.Generator) -> None:
    for number in range(40):
        kind = "alert" if number % 2 == 0 else "alert_resolved"
        registry.log_event(
            MODEL,
            kind,
            actor="monitor",
            reason=f"drift: drifted: mean area (round {number})",
            details={"name": "drift", "firing": kind == "alert", "value": float(rng.random())},
        )


def _store(store: StoreLocation, versions: int, count: int, days: float, rng: np.random.Generator) -> None:
    now = time.time()
    start = now - days * 86400
    created = np.sort(rng.uniform(start, now, count))
    with open_database(store) as database:
        for block in range(0, count, BATCH):
            stop = min(block + BATCH, count)
            latency = rng.lognormal(0.0, 0.5, stop - block)
            database.append(
                (
                    f"req-{index}",
                    0,
                    MODEL,
                    versions - (index % 10 == 0),
                    "v2",
                    float(created[index]),
                    float(latency[index - block]),
                    '{"mean area": 1.0}',
                    "malignant" if index % 3 == 0 else "benign",
                    0.9,
                    "[0.1, 0.9]",
                )
                for index in range(block, stop)
            )
        rounds = np.arange(start, now, ROUND_S)
        database.add_quality(
            QualityRow(
                MODEL, versions - offset, "1h", metric, float(0.9 + 0.05 * np.sin(at / 3600)), 200, float(at)
            )
            for at in rounds
            for offset in (0, 1)
            for metric in ("accuracy", "f1_macro")
        )
        database.add_drift(
            DriftRow(
                MODEL,
                f"feature {index}",
                "ks",
                float(rng.uniform(0, 1e-3 if index < 6 else 1)),
                index < 6,
                500,
                float(at),
            )
            for at in rounds
            for index in range(FEATURES)
        )


if __name__ == "__main__":
    generate(Path(sys.argv[1]))
