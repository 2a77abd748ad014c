"""``modelcycle demo``: the whole loop on built-in data, end to end, in a few minutes on 2 CPU cores.

train → optimize → export → bench → register → serve (in the background) → traffic → the input distribution
shifts (a recalibrated instrument: some measurements read 40 % high) → drift alert → delayed feedback → update
(fine-tune, gate) → canary → promote. Every stage leaves its figures in a ``DemoResult``; the server stops on
exit, Ctrl-C included. Nothing is downloaded: the data is scikit-learn's breast-cancer set.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from modelcycle.bench import bench, choose_variant
from modelcycle.config import MonitorConfig, PipelineConfig, ServeConfig, UpdateConfig
from modelcycle.data import load_dataset
from modelcycle.export import export_onnx
from modelcycle.monitor.database import open_database
from modelcycle.monitor.live import store_path
from modelcycle.monitor.quality import live_quality
from modelcycle.monitor.report import monitor_report
from modelcycle.optimize import quantize
from modelcycle.pipeline import train
from modelcycle.registry import Registry
from modelcycle.report import write_report
from modelcycle.serve import create_app
from modelcycle.serve.background import background_server
from modelcycle.update import AdminClient, update
from modelcycle.update.loop import canary

logger = logging.getLogger(__name__)
MODEL = "breast-cancer-mlp"
# examples/breast-cancer-mlp.yaml, inline so the demo runs from an installed package too
CONFIG = {
    "name": MODEL,
    "seed": 0,
    "data": {"source": "builtin:breast_cancer", "target": "target", "split": {"valid": 0.15, "test": 0.15}},
    "model": {"arch": "mlp", "params": {"hidden": [32], "dropout": 0.1}},
    "train": {
        "epochs": 60,
        "batch_size": 32,
        "optimizer": {"name": "adamw", "lr": 0.001, "weight_decay": 0.01},
    },
}
SHIFTED = ("mean radius", "mean perimeter", "mean area", "worst radius", "worst perimeter", "worst area")
SHIFT = 1.4  # the recalibrated instrument reads these measurements 40 % high
NORMAL_REQUESTS = 150
SHIFTED_REQUESTS = 300


@dataclass
class Stage:
    name: str
    seconds: float
    figures: str


@dataclass
class DemoResult:
    stages: list[Stage] = field(default_factory=list)
    reports: list[Path] = field(default_factory=list)
    requests: int = 0
    failed_requests: int = 0
    drift_detected: bool = False
    old_live_accuracy: float | None = None
    new_live_accuracy: float | None = None
    promoted: bool = False


def run_demo(home: Path, *, say: Callable[[str], None] = logger.info) -> DemoResult:
    """Run every stage in the registry at ``home``; ``say`` hears about each stage as it finishes."""
    result = DemoResult()
    registry = Registry(home)
    clock = time.perf_counter()

    def done(name: str, figures: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        result.stages.append(Stage(name, now - clock, figures))
        say(f"{name}: {figures} ({now - clock:.1f} s)")
        clock = now

    config = PipelineConfig.model_validate(CONFIG)
    trained = train(config, registry)
    assert trained is not None
    bundle = registry.open(trained.ref)
    done("train", f"{trained.ref}, test accuracy {bundle.manifest.metrics['test']['accuracy']:.4f}")
    quantize(bundle, "dynamic-int8", runtime="torch")
    export_onnx(bundle)
    variants = bundle.variant_names()
    done("optimize + export", f"variants {', '.join(variants)}")
    bench(bundle, batch_sizes=[1, 32], seconds=0.5)
    done("bench", f"auto serves {choose_variant(bundle)} at batch 1")
    registry.set_alias(trained.ref, "production", actor="demo", reason="first version")
    done("register", f"{trained.ref} is production")

    # 6 of the 31 watched columns shift: alert when 15 % drift (the default, half, suits broader shifts)
    monitoring = MonitorConfig(
        interval_s=1.0, drift_window="10m", drift_min_rows=100, drift_share=0.15, windows=["10m"]
    )
    token = secrets.token_hex(16)
    app = create_app(registry, [MODEL], ServeConfig(), admin_token=token, monitoring=monitoring)
    # traffic: the whole table in a fixed shuffled order (not the 85 test rows over and over, which a drift
    # test would rightly see as a distribution of its own)
    everything = load_dataset(config.data, seed=config.seed)
    everything = everything.take(np.random.default_rng(config.seed).permutation(len(everything)))
    rows = everything.frame[everything.features].to_dict(orient="records")
    truth = everything.frame[everything.target].astype(str).tolist()
    shifted = [
        {name: value * SHIFT if name in SHIFTED else value for name, value in row.items()} for row in rows
    ]
    with background_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        done("serve", f"{url} (monitoring on, admin token set)")
        send(client, rows, NORMAL_REQUESTS, result)
        time.sleep(2.5 * monitoring.interval_s)
        calm = [event.kind for event in registry.history(MODEL, limit=20)].count("alert")
        done("traffic", f"{NORMAL_REQUESTS} requests like the training data; drift alerts: {calm}")
        answered = send(client, shifted, SHIFTED_REQUESTS, result)
        alert = wait_for_alert(registry, timeout_s=30)
        result.drift_detected = alert is not None
        done("shift", f"{SHIFTED_REQUESTS} shifted requests; drift alert: {alert or 'none'}")
        for request_id, index in answered:
            reply = client.post("/v1/feedback", json={"request_id": request_id, "label": truth[index]})
            result.requests += 1
            result.failed_requests += reply.status_code >= 400
        store = store_path(monitoring, registry)
        with open_database(store) as database:
            old = live_quality(
                database,
                MODEL,
                bundle.manifest.task,
                bundle.manifest.outputs.labels,
                window="10m",
                now=time.time(),
                version=1,
            )
        result.old_live_accuracy = old.metrics.get("accuracy")
        done(
            "feedback",
            f"{len(answered)} labels; live accuracy of {trained.ref} on shifted traffic "
            f"{result.old_live_accuracy:.4f}",
        )
        settings = UpdateConfig(
            window="1h",
            tolerance=0.03,
            canary_percent=50,
            canary_min_samples=40,
            poll_s=0.5,
            canary_timeout_s=120,
        )
        candidate = update(registry, MODEL, settings, monitoring)
        recent = candidate.judgement.recent_traffic if candidate.judgement else None
        done(
            "update",
            f"{candidate.outcome}: {candidate.reason}; recent-traffic accuracy "
            f"{recent.base if recent else float('nan'):.4f} → "
            f"{recent.candidate if recent else float('nan'):.4f}",
        )
        if candidate.candidate is None:
            return result
        stop = threading.Event()
        sender = threading.Thread(target=keep_sending, args=(client, shifted, truth, stop, result))
        sender.start()
        try:
            admin = AdminClient(url, token)
            outcome = canary(
                registry, admin, candidate, registry.open(candidate.candidate), bundle, settings, store
            )
        finally:
            stop.set()
            sender.join(timeout=60)
        live = (outcome.canary or {}).get("candidate", {})
        beside = (outcome.canary or {}).get("production", {})
        result.new_live_accuracy = live.get("accuracy")
        result.promoted = outcome.outcome == "promoted"
        done(
            "canary",
            f"{outcome.outcome}: {outcome.reason}; production in the same window: "
            f"{beside.get('accuracy', float('nan')):.4f} over {beside.get('samples', 0)}",
        )
        loop_report = home / f"{MODEL}-monitor.html"
        events = registry.history(MODEL)
        result.reports.append(
            monitor_report(store, MODEL, since_seconds=3600, out=loop_report, events=events)
        )
    for ref in (trained.ref, candidate.candidate):
        result.reports.append(write_report(registry.open(ref)))
    done("reports", ", ".join(str(path) for path in result.reports))
    registry.close()
    return result


def send(
    client: httpx.Client, rows: list[dict[str, Any]], count: int, result: DemoResult
) -> list[tuple[str, int]]:
    """``count`` single-row predictions (cycling through ``rows``); (request id, row index) of each."""
    answered = []
    for number in range(count):
        index = number % len(rows)
        reply = client.post(f"/v1/models/{MODEL}:predict", json={"instances": [rows[index]]})
        result.requests += 1
        if reply.status_code >= 400:
            result.failed_requests += 1
            continue
        answered.append((reply.json()["request_id"], index))
    return answered


def keep_sending(
    client: httpx.Client,
    rows: list[dict[str, Any]],
    truth: list[str],
    stop: threading.Event,
    result: DemoResult,
) -> None:
    """Shifted traffic with prompt feedback while the canary is watched (bounded: 5,000 requests)."""
    for number in range(5000):
        if stop.is_set():
            return
        index = number % len(rows)
        for request_id, _ in send(client, [rows[index]], 1, result):
            reply = client.post("/v1/feedback", json={"request_id": request_id, "label": truth[index]})
            result.requests += 1
            result.failed_requests += reply.status_code >= 400


def wait_for_alert(registry: Registry, *, timeout_s: float) -> str | None:
    """The reason of the first drift alert raised for the model, waiting up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for event in registry.history(MODEL, limit=20):
            if event.kind == "alert" and (event.reason or "").startswith("drift"):
                return event.reason
        time.sleep(0.5)
    return None
