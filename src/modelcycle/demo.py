"""``modelcycle demo``: the whole loop on built-in data, end to end, in a few minutes on 2 CPU cores.

``modelcycle.loop.run`` composes the stages: train → optimize → export → bench → register → serve (in the
background) → traffic → feedback → update (fine-tune, gate) → canary → promote. What the demo adds is its
world: scikit-learn's breast-cancer set (nothing is downloaded), traffic like the training data, then the
input distribution shifts (a recalibrated instrument: some measurements read 40 % high) until the monitor
raises a drift alert, with the true labels as delayed feedback; and the summary it claims (``DemoResult``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelcycle.config import PipelineConfig
from modelcycle.data import load_dataset
from modelcycle.loop import Feedback, LoopPlan, Served, Stage, run
from modelcycle.registry import Registry

logger = logging.getLogger(__name__)
MODEL = "breast-cancer-mlp"
# examples/breast-cancer-mlp.yaml, inline so the demo runs from an installed package too; how it is watched
# and updated is tuned to the demo's minutes: 6 of the 31 watched columns shift, so an alert needs 15 % of
# them to drift (the default, half, suits broader shifts)
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
    "monitor": {
        "interval_s": 1.0,
        "drift_window": "10m",
        "drift_min_rows": 100,
        "drift_share": 0.15,
        "windows": ["10m"],
    },
    "update": {
        "window": "1h",
        "tolerance": 0.03,
        "canary_percent": 50,
        "canary_min_samples": 40,
        "poll_s": 0.5,
        "canary_timeout_s": 120,
    },
}
SHIFTED = ("mean radius", "mean perimeter", "mean area", "worst radius", "worst perimeter", "worst area")
SHIFT = 1.4  # the recalibrated instrument reads these measurements 40 % high
NORMAL_REQUESTS = 150
SHIFTED_REQUESTS = 300
CANARY_REQUESTS = 5000  # the most sent while the canary is watched
ALERT_TIMEOUT_S = 30


@dataclass
class DemoResult:
    """What the demo claims: the shift was detected, the updated model is better on the shifted traffic than
    the old one and was promoted, and no request failed."""

    stages: list[Stage]
    reports: list[Path]
    requests: int
    failed_requests: int
    drift_detected: bool
    old_live_accuracy: float | None
    new_live_accuracy: float | None
    promoted: bool


class ShiftedTraffic:
    """The whole table in a fixed shuffled order (not the 85 test rows over and over, which a drift test
    would rightly see as a distribution of its own): first as measured, then with ``SHIFTED`` read 40 %
    high; the true labels come back for the shifted answers."""

    name = "shifted traffic"

    def __init__(self, config: PipelineConfig) -> None:
        everything = load_dataset(config.data, seed=config.seed)
        everything = everything.take(np.random.default_rng(config.seed).permutation(len(everything)))
        self.rows = everything.frame[everything.features].to_dict(orient="records")
        self.truth = everything.frame[everything.target].astype(str).tolist()
        self.shifted = [
            {name: value * SHIFT if name in SHIFTED else value for name, value in row.items()}
            for row in self.rows
        ]

    def before_update(self, served: Served) -> list[Feedback]:
        send(served, self.rows, NORMAL_REQUESTS)
        time.sleep(2.5 * served.monitoring.interval_s)  # a few monitoring rounds
        served.timeline.done(
            "traffic",
            f"{NORMAL_REQUESTS} requests like the training data; drift alerts: {len(served.alerts())}",
        )
        answered = send(served, self.shifted, SHIFTED_REQUESTS)
        alert = served.wait_for_alert("drift", timeout_s=ALERT_TIMEOUT_S)
        served.timeline.done("shift", f"{SHIFTED_REQUESTS} shifted requests; drift alert: {alert or 'none'}")
        return [Feedback(request_id, self.truth[index]) for request_id, index in answered]

    def during_canary(self, served: Served, stop: threading.Event) -> None:
        for number in range(CANARY_REQUESTS):
            if stop.is_set():
                return
            index = number % len(self.shifted)
            for request_id, _ in send(served, [self.shifted[index]], 1):
                served.feedback(Feedback(request_id, self.truth[index]))


def run_demo(home: Path, *, say: Callable[[str], None] = logger.info) -> DemoResult:
    """Run the loop in the registry at ``home``; ``say`` hears about each stage as it finishes."""
    config = PipelineConfig.model_validate(CONFIG)
    registry = Registry(home)
    try:
        loop = run(config, registry, ShiftedTraffic(config), plan=LoopPlan(actor="demo"), say=say)
    finally:
        registry.close()
    return DemoResult(
        stages=loop.stages,
        reports=loop.reports,
        requests=loop.requests,
        failed_requests=loop.failed_requests,
        drift_detected=any(reason.startswith("drift") for reason in loop.alerts),
        old_live_accuracy=loop.live_before,
        new_live_accuracy=loop.live_after,
        promoted=loop.promoted,
    )


def send(served: Served, rows: list[dict[str, Any]], count: int) -> list[tuple[str, int]]:
    """``count`` single-row predictions (cycling through ``rows``); (request id, row index) of each answer."""
    answered = []
    for number in range(count):
        index = number % len(rows)
        request_id = served.predict(rows[index])
        if request_id is not None:
            answered.append((request_id, index))
    return answered
