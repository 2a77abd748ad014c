"""``modelcycle evaluate REF [--data SOURCE]``."""

from __future__ import annotations

from typing import Annotated

import typer

from modelcycle.cli.options import JsonFlag
from modelcycle.cli.render import emit_json, say, table
from modelcycle.cli.state import open_registry


def evaluate(
    ref: Annotated[str, typer.Argument(help="The version to evaluate, e.g. digits-cnn@production.")],
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="A data source with the model's features and target (default: the test "
            "split the model was trained with).",
        ),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Metrics of a registered model on data: accuracy, precision / recall / F1, ROC-AUC, log-loss,
    calibration error and the confusion matrix; MAE, RMSE and R² for regression."""
    from modelcycle.config import DataConfig
    from modelcycle.data import load_dataset
    from modelcycle.evaluate import evaluate as evaluate_bundle
    from modelcycle.predictor import training_split

    bundle = open_registry().open(ref)
    if data is None:
        report = evaluate_bundle(bundle, training_split(bundle), data_name="test split of its training data")
    else:
        dataset = load_dataset(DataConfig(source=data, target=bundle.manifest.outputs.target))
        report = evaluate_bundle(bundle, dataset)
    if json_output:
        emit_json(report)
        return
    say(f"{report.ref} on {report.data} ({report.rows} rows)", style="bold")
    table("metrics", ["metric", "value"], sorted(report.metrics.items()))
    if report.confusion_matrix is not None and report.labels:
        table(
            "confusion matrix (rows: true, columns: predicted)",
            ["", *report.labels],
            [[label, *row] for label, row in zip(report.labels, report.confusion_matrix, strict=True)],
        )
