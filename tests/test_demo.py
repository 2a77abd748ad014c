"""The demo completes the loop on built-in data: the shift is detected, the updated model is better on the
shifted traffic than the old one, it is promoted, and no request fails."""

from __future__ import annotations

import pytest

from modelcycle.bundle import Bundle
from modelcycle.demo import SHIFTED
from tests.conftest import DemoRun


@pytest.mark.slow
def test_the_demo_closes_the_loop(demo_run: DemoRun) -> None:
    result, lines = demo_run.result, demo_run.lines
    assert [stage.name for stage in result.stages] == [
        "train",
        "optimize + export",
        "bench",
        "register",
        "serve",
        "traffic",
        "shift",
        "feedback",
        "update",
        "canary",
        "reports",
    ]
    assert result.drift_detected
    # The alert names the drifted columns: shifted features and the predictions they move (larger cells
    # read as malignant), at least the 15 % of the 31 watched columns that raise it. Not always all six
    # features: a round may land while the shifted requests still arrive, with five past the threshold.
    shift = next(stage.figures for stage in result.stages if stage.name == "shift")
    named = shift.split("drifted: ", 1)[1].split(", ")
    assert set(named) <= {*SHIFTED, "prediction"}
    assert len(named) >= 5
    assert result.old_live_accuracy is not None
    assert result.new_live_accuracy is not None
    assert result.new_live_accuracy > result.old_live_accuracy
    assert result.promoted
    assert result.failed_requests == 0
    assert result.requests > 900
    assert [path.name for path in result.reports] == [
        "breast-cancer-mlp-monitor.html",
        "report.html",
        "report.html",
    ]
    assert Bundle(result.reports[2].parent).manifest.lineage.parent == "breast-cancer-mlp@1"
    assert len(lines) == len(result.stages)
    timeline = result.reports[0].read_text()  # the loop report: drift, live quality, the promotion timeline
    assert all(kind in timeline for kind in ("alert", "update_registered", "canary", "update_promoted"))
