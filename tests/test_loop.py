"""``modelcycle.loop.run`` composes the stages from their typed results: a loop whose traffic brings too
little feedback stops at the update (skipped) with every earlier stage's result in hand, every request and
failure counted, and production's live quality measured on the labels that came back."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from modelcycle.config import load_config
from modelcycle.data import load_dataset
from modelcycle.loop import Feedback, LoopPlan, Served, run
from modelcycle.registry import Registry
from tests.conftest import EXAMPLES

ROWS = 6


class EchoTraffic:
    """``ROWS`` predictions labelled with what the model answered (so its live accuracy is exactly 1), one
    malformed request, and an alert raised meanwhile."""

    name = "echo traffic"

    def __init__(self, rows: list[dict[str, float]]) -> None:
        self.rows = rows
        self.canary_watched = False

    def before_update(self, served: Served) -> list[Feedback]:
        labels = []
        for row in self.rows:
            answer = served.client.post(f"/v1/models/{served.name}:predict", json={"instances": [row]})
            assert answer.status_code == 200, answer.text
            labels.append(Feedback(answer.json()["request_id"], answer.json()["predictions"][0]["label"]))
        assert served.client.post(f"/v1/models/{served.name}:predict", json={"rows": 3}).status_code == 400
        served.registry.log_event(served.name, "alert", actor="monitor", reason="drift: mean radius")
        assert served.wait_for_alert("drift", timeout_s=5) == "drift: mean radius"
        served.timeline.done("traffic", f"{ROWS} requests")
        return labels

    def during_canary(self, served: Served, stop: threading.Event) -> None:
        self.canary_watched = True


@pytest.mark.slow  # measured: 19 CPU-s on its own (training, serving, bench and update inside the test)
def test_a_loop_without_enough_feedback_stops_at_the_update(registry: Registry, home: Path) -> None:
    config = load_config(EXAMPLES / "breast-cancer-mlp.yaml", ["train.epochs=2", "update.min_feedback=50"])
    data = load_dataset(config.data, seed=config.seed)
    traffic = EchoTraffic(data.frame[data.features].head(ROWS).to_dict(orient="records"))
    lines: list[str] = []
    plan = LoopPlan(bench_batch_sizes=(1,), bench_seconds=0.1, actor="test")
    result = run(config, registry, traffic, plan=plan, say=lines.append)
    names = [stage.name for stage in result.stages]
    assert names == [
        "train",
        "optimize + export",
        "bench",
        "register",
        "serve",
        "traffic",
        "feedback",
        "update",
    ]
    assert len(lines) == len(names)
    assert result.trained.ref == "breast-cancer-mlp@1"
    assert result.metric == "accuracy"
    assert [variant.variant for variant in result.variants] == ["int8-dynamic"]
    assert result.export is not None
    assert result.bench is not None
    assert set(registry.open("breast-cancer-mlp@1").variant_names()) == {"int8-dynamic", "onnx-fp32"}
    assert registry.resolve("breast-cancer-mlp@production").version == 1
    assert result.alerts == ["drift: mean radius"]
    assert result.live_before == 1.0
    feedback = next(stage.figures for stage in result.stages if stage.name == "feedback")
    assert feedback == f"{ROWS} labels; live accuracy of breast-cancer-mlp@1 on echo traffic 1.0000"
    assert result.update is not None
    assert result.update.outcome == "skipped"
    assert result.update.reason.startswith(f"{ROWS} labelled rows")
    assert not result.promoted
    assert not traffic.canary_watched
    assert result.reports == []
    # predictions, the malformed request and the feedback; the admin API is not traffic
    assert (result.requests, result.failed_requests) == (2 * ROWS + 1, 1)
    kinds = [event.kind for event in registry.history("breast-cancer-mlp")]
    assert "update_skipped" in kinds
