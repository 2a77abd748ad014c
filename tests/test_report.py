"""report.html: the sections a reader needs for each kind of model, a bundle that still verifies after its
report is written, and pages that headless Chromium renders with no console errors."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from modelcycle.bundle import Bundle
from modelcycle.data import TargetEncoder
from modelcycle.export import export_onnx
from modelcycle.monitor.database import connect
from modelcycle.monitor.report import monitor_report
from modelcycle.monitor.store import PredictionRecord, PredictionStore
from modelcycle.registry import Registry
from tests.conftest import CliResult, train_into

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Reports of a tabular MLP (with an ONNX variant), a CNN and a text model, and a monitoring report."""
    from modelcycle.report import write_report

    home = train_into(
        tmp_path_factory.mktemp("report-home"),
        ("breast-cancer-mlp.yaml", ["train.epochs=5"]),
        ("digits-cnn.yaml", ["train.epochs=1"]),
        ("text-student.yaml", ["data.max_rows=600", "train.epochs=1"]),
    )
    registry = Registry(home)
    try:
        export_onnx(registry.open("breast-cancer-mlp"))
        names = ("breast-cancer-mlp", "digits-cnn", "text-student")
        written = {name: write_report(registry.open(name)) for name in names}
    finally:
        registry.close()
    store = PredictionStore(home / "monitor.db")
    labels = TargetEncoder("classification")
    labels.classes_ = ["malignant", "benign"]
    for index in range(50):
        outputs = np.array([[0.2 * (index % 3), 0.1]])
        created = time.time() - 60 * index
        store.record(
            PredictionRecord(f"r{index}", "breast-cancer-mlp", 1, "v1", created, 1.5, [{}], outputs, labels)
        )
    store.close()
    checked = time.time()  # one monitoring round writes all its rows at one time
    with connect(home / "monitor.db") as connection:
        for feature, score, drifted in (
            ("mean radius", 0.001, 1),
            ("mean area", 0.4, 0),
            ("prediction", 0.03, 1),
        ):
            row = ("breast-cancer-mlp", feature, "ks", score, drifted, 50, checked)
            connection.execute("INSERT INTO drift VALUES (?, ?, ?, ?, ?, ?, ?)", row)
    written["monitor"] = monitor_report(
        home / "monitor.db", "breast-cancer-mlp", since_seconds=7200, out=home / "m.html"
    )
    return written


@pytest.mark.slow  # the reports fixture trains three models, exports one and renders: 23 CPU-s, measured
def test_each_kind_of_model_gets_its_sections(reports: dict[str, Path]) -> None:
    tabular = reports["breast-cancer-mlp"].read_text()
    for heading in (
        "Overview",
        "Training",
        "Confusion matrix",
        "ROC",
        "Global importance",
        "Explained examples",
        "Variants",
    ):
        assert f"<h2>{heading}" in tabular, heading
    assert "onnx-fp32" in tabular
    assert len(re.findall(r'src="data:image/png;base64,', tabular)) == 4  # curves, confusion, ROC, importance
    digits = reports["digits-cnn"].read_text()
    assert len(re.findall(r'alt="attribution heatmap \d"', digits)) == 3
    assert "Global importance" not in digits  # needs named features
    text = reports["text-student"].read_text()
    assert text.count('class="explanation"') == 3


@pytest.mark.slow  # the reports fixture trains three models, exports one and renders: 23 CPU-s, measured
def test_the_monitoring_report_plots_drift_per_feature(reports: dict[str, Path]) -> None:
    page = reports["monitor"].read_text()
    assert "<h2>Drift per feature (latest check)</h2><img" in page
    assert page.count('class="drifted">yes') == 2


@pytest.mark.slow  # the reports fixture trains three models, exports one and renders: 23 CPU-s, measured
def test_the_bundle_still_verifies_with_its_report(reports: dict[str, Path]) -> None:
    bundle = Bundle(reports["digits-cnn"].parent)  # reading verifies every file's sha256
    assert (bundle.path / "report.html").stat().st_size > 10_000


def test_report_command_names_an_unknown_version(cli: Callable[..., CliResult]) -> None:
    missing = cli("report", "nothing@1")
    assert missing.exit_code != 0
    assert "nothing" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.integration
@pytest.mark.skipif(CHROMIUM is None, reason="chromium (Debian: chromium) missing")
def test_reports_render_in_headless_chromium_without_console_errors(reports: dict[str, Path]) -> None:
    for name, path in reports.items():
        result = subprocess.run(
            [
                str(CHROMIUM),
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--enable-logging=stderr",
                "--v=0",
                "--dump-dom",
                path.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert (
            "<h1>breast-cancer-mlp" in result.stdout
            if name == "monitor"
            else f"<h1>{name}@1</h1>" in result.stdout
        )
        console = [line for line in result.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
        assert console == [], console
