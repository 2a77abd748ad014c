"""A version's ``report.html``: what it is, how it trained (curves), how good it is on its test split
(metrics, confusion matrix, ROC), which forms of it exist and how fast they are (variants), what it looks at
(global importance and a few explained test rows). One static file with its pictures inside; rewritten
whenever asked (variants and bench figures arrive after registration), atomically."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelcycle.bundle import Bundle
from modelcycle.bundle.files import write_text_atomic
from modelcycle.bundle.io import REPORT
from modelcycle.data.kinds import input_kind
from modelcycle.errors import BundleError
from modelcycle.evaluate import evaluate
from modelcycle.explain import Explanation, explain, permutation_importance
from modelcycle.explain.render import draw_heatmap, draw_importance, importance_size, tokens_html
from modelcycle.plots import png_base64
from modelcycle.predictor import Predictor, training_split
from modelcycle.tasks import TASKS
from modelcycle.tasks.classification import softmax

logger = logging.getLogger(__name__)
EXPLAINED_ROWS = 3


@dataclass(frozen=True)
class Section:
    title: str
    body: str  # HTML


def write_report(bundle: Bundle, *, out: Path | None = None) -> Path:
    """Build the report and write it to ``out`` (default: the bundle's ``report.html``)."""
    sections = [_overview(bundle), *_training(bundle), *_held_out(bundle), _variants(bundle)]
    page = _page(bundle.ref, [section for section in sections if section is not None])
    path = out or bundle.path / REPORT
    write_text_atomic(path, page)
    return path


def _page(ref: str, sections: list[Section]) -> str:
    parts = [
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(ref)} — report</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}"
        "table{border-collapse:collapse;margin:.8rem 0}td,th{border:1px solid #ccc;padding:.25rem .6rem;"
        "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>{html.escape(ref)}</h1>",
    ]
    for section in sections:
        parts.append(f"<section><h2>{html.escape(section.title)}</h2>\n{section.body}</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _table(columns: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(name))}</th>" for name in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(value))}</td>" for value in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def _size(size_bytes: int) -> str:
    return f"{size_bytes / 1e6:.2f} MB" if size_bytes >= 1e6 else f"{size_bytes / 1e3:.1f} kB"


def _image(data: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _overview(bundle: Bundle) -> Section:
    manifest = bundle.manifest
    lineage = manifest.lineage
    facts: list[list[Any]] = [
        ["task", manifest.task],
        ["architecture", manifest.architecture.name],
        ["inputs", manifest.inputs.kind],
        ["classes", ", ".join(manifest.outputs.labels or []) or None],
        ["weights", _size(bundle.weights_bytes)],
        ["parent", lineage.parent],
        ["data", lineage.data_source],
        ["run", lineage.run_id],
    ]
    splits = sorted(manifest.metrics)
    names = sorted({name for values in manifest.metrics.values() for name in values})
    metrics = [[name, *[manifest.metrics[split].get(name) for split in splits]] for name in names]
    return Section("Overview", _table(["", "value"], facts) + _table(["metric", *splits], metrics))


def _training(bundle: Bundle) -> list[Section]:
    try:
        history = bundle.read_json("history.json")
    except BundleError:
        return []  # imported: never trained here
    epochs = history.get("epochs") or []
    if not epochs:
        return []

    def curves(axes: Any) -> None:
        steps = [row["epoch"] for row in epochs]
        for key in sorted({key for row in epochs for key in row}):
            if (key.endswith("loss") and key != "valid_log_loss") or key == primary:
                axes.plot(steps, [row.get(key, np.nan) for row in epochs], marker=".", label=key)
        axes.axvline(history.get("best_epoch") or steps[-1], color="grey", linestyle=":", label="kept")
        axes.set_xlabel("epoch")
        axes.legend()

    primary = "valid_" + TASKS.get(bundle.manifest.task)().primary_metric
    note = f"Best epoch {history.get('best_epoch')}; stopped early: {history.get('stopped_early')}."
    return [Section("Training", f"<p>{note}</p>" + _image(png_base64(curves), "training curves"))]


def _held_out(bundle: Bundle) -> list[Section]:
    """Test-split quality, importance and explained rows; nothing for a bundle without its training data."""
    if TASKS.get(bundle.manifest.task)().ordered_rows:  # a corpus has no rows to explain one by one
        return []
    try:
        test = training_split(bundle, "test")
    except BundleError:
        return []
    if len(test) == 0:
        return []
    predictor = Predictor.load(bundle)
    sections = []
    report = evaluate(bundle, test, data_name="test split")
    if report.confusion_matrix is not None and report.labels:
        sections.append(
            Section("Confusion matrix (test split)", _confusion(report.labels, report.confusion_matrix))
        )
        sections.append(Section("ROC (test split)", _roc(predictor, test)))
    if input_kind(bundle.manifest.inputs.kind).attribution_form == "features" and test.target is not None:
        importance = permutation_importance(predictor, test, repeats=3)
        rows = [[item.feature, item.mean, item.std] for item in importance.features[:10]]
        chart = png_base64(lambda axes: draw_importance(axes, importance), size=importance_size(importance))
        sections.append(
            Section(
                "Global importance (permutation, test split)",
                _image(chart, "permutation importance") + _table(["feature", "mean drop", "std"], rows),
            )
        )
    sections.append(Section("Explained examples (integrated gradients)", _examples(predictor, test)))
    return sections


def _confusion(labels: list[str], matrix: list[list[int]]) -> str:
    def draw(axes: Any) -> None:
        values = np.asarray(matrix)
        axes.imshow(values, cmap="Blues")
        axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        axes.set_yticks(range(len(labels)), labels)
        axes.set_xlabel("predicted")
        axes.set_ylabel("true")
        for (row, column), count in np.ndenumerate(values):
            axes.text(column, row, str(count), ha="center", va="center", fontsize=8)

    side = min(8.0, 2.5 + 0.45 * len(labels))
    return _image(png_base64(draw, size=(side, side)), "confusion matrix")


def _roc(predictor: Predictor, test: Any) -> str:
    from sklearn.metrics import auc, roc_curve

    probabilities = softmax(predictor.outputs(test).astype(np.float64))
    truth = predictor.encoder.transform(test)
    labels = predictor.encoder.classes_
    shown = [1] if len(labels) == 2 else range(len(labels))

    def draw(axes: Any) -> None:
        for index in shown:
            if (truth == index).all() or not (truth == index).any():
                continue
            false_positive, true_positive, _ = roc_curve(truth == index, probabilities[:, index])
            area = auc(false_positive, true_positive)
            axes.plot(false_positive, true_positive, label=f"{labels[index]} (AUC {area:.3f})")
        axes.plot([0, 1], [0, 1], color="grey", linestyle=":")
        axes.set_xlabel("false positive rate")
        axes.set_ylabel("true positive rate")
        axes.legend(fontsize="small")

    return _image(png_base64(draw, size=(5.5, 4.5)), "ROC curves")


def _examples(predictor: Predictor, test: Any) -> str:
    rows = test.take(np.arange(min(EXPLAINED_ROWS, len(test))))
    kind = input_kind(predictor.bundle.manifest.inputs.kind)
    instances = kind.instances(rows)
    parts = []
    for index, explanation in enumerate(explain(predictor, instances, method="ig")):
        heading = (
            f"<h3>Row {index}: predicted {html.escape(str(explanation.prediction))}"
            f" (p = {explanation.probability or 0:.3f})</h3>"
        )
        if kind.attribution_form == "features":
            body = _table(["feature", "attribution"], [list(pair) for pair in explanation.ranked()[:5]])
        elif kind.attribution_form == "tokens":
            body = tokens_html(explanation)
        else:
            image = np.asarray(instances[index], dtype=np.float64)

            def draw(axes: Any, image: np.ndarray = image, explanation: Explanation = explanation) -> None:
                draw_heatmap(axes, image, explanation)

            body = _image(png_base64(draw, size=(3.6, 3.2)), f"attribution heatmap {index}")
        parts.append(heading + body)
    return "\n".join(parts)


def _variants(bundle: Bundle) -> Section | None:
    names = bundle.variant_names()
    if not names:
        return None
    rows = []
    for name in names:
        manifest = bundle.variant(name).manifest
        latency = manifest.latency_ms or {}
        rows.append(
            [
                name,
                manifest.runtime,
                _size(manifest.size_bytes),
                manifest.accuracy_delta,
                latency.get("p50"),
                latency.get("p99"),
                manifest.verdict,
            ]
        )
    return Section(
        "Variants", _table(["variant", "runtime", "size", "accuracy Δ", "p50 ms", "p99 ms", "verdict"], rows)
    )
