"""``modelcycle monitor drift|report``: drift of a data source against a version's training data, and the
HTML page of a model's live traffic, quality and drift from the prediction store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelcycle.cli.options import JsonFlag
from modelcycle.cli.render import emit_json, format_value, say, table
from modelcycle.cli.state import open_registry
from modelcycle.config import MonitorConfig, load_config

app = typer.Typer(help="Drift checks and monitoring reports.", no_args_is_help=True)
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", help="A pipeline YAML whose monitor: section sets the store and tests."),
]


@app.command("drift")
def drift(
    ref: Annotated[str, typer.Argument(help="The version whose training data is the reference.")],
    data: Annotated[
        str, typer.Option("--data", help="The data to check (a file or builtin:NAME); no labels needed.")
    ],
    config_file: ConfigFile = None,
    json_output: JsonFlag = False,
) -> None:
    """Per-feature drift (PSI, KS, Wasserstein; chi², Jensen–Shannon) and drift of the predicted classes;
    exit code 0 either way — read "drifted" in the output."""
    from modelcycle.bundle import Bundle
    from modelcycle.config import DataConfig
    from modelcycle.data import load_dataset
    from modelcycle.monitor.reference import dataset_drift

    monitor = _monitor_config(config_file)
    bundle = Bundle(open_registry().resolve(ref).path)
    dataset = load_dataset(DataConfig(source=data))
    report = dataset_drift(bundle, dataset, alpha=monitor.drift_alpha, share=monitor.drift_share)
    if json_output:
        emit_json({"ref": bundle.ref, "data": data, **report.to_json()})
        return
    verdict = "DRIFTED" if report.drifted else "no drift"
    say(
        f"{bundle.ref} vs {data} ({report.rows} rows): {verdict}",
        style="bold red" if report.drifted else "bold",
    )
    table(
        "drift per feature",
        ["feature", "method", "score", "threshold", "drifted", "psi"],
        [
            [
                item.feature,
                item.method,
                format_value(item.score),
                item.threshold,
                "yes" if item.drifted else "",
                format_value(item.statistics.get("psi")),
            ]
            for item in report.features
        ],
    )


@app.command("report")
def report(
    ref: Annotated[
        str, typer.Argument(help="The model (any version reference; traffic of all its versions).")
    ],
    since: Annotated[str, typer.Option("--since", help="How far back: 30m, 24h, 7d.")] = "24h",
    out: Annotated[Path | None, typer.Option("--out", help="The HTML file [NAME-monitor.html].")] = None,
    config_file: ConfigFile = None,
) -> None:
    """An HTML page with traffic, latency, predicted classes, live quality over time and drift per feature."""
    from modelcycle.config import duration_seconds
    from modelcycle.errors import ConfigError, NotFoundError
    from modelcycle.monitor.live import store_path
    from modelcycle.monitor.report import monitor_report

    try:
        seconds = duration_seconds(since)
    except ValueError as error:
        raise ConfigError(f"--since: {error}") from None
    registry = open_registry()
    name = registry.resolve(ref).name
    store = store_path(_monitor_config(config_file), registry)
    if not store.exists():
        raise NotFoundError(
            f"{store}: no prediction store yet", hint="serve the model first (monitoring is on by default)"
        )
    events = registry.history(name)
    path = monitor_report(
        store, name, since_seconds=seconds, out=out or Path(f"{name}-monitor.html"), events=events
    )
    say(f"wrote {path}")


def _monitor_config(config_file: Path | None) -> MonitorConfig:
    return load_config(config_file).monitor if config_file is not None else MonitorConfig()
