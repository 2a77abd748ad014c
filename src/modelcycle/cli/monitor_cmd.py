"""``modelcycle monitor drift|report|rotate-key``: drift of a data source against a version's training data,
the HTML page of a model's live traffic, quality and drift from the prediction store, and re-encrypting the
store under its current key."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from modelcycle.cli.options import JsonFlag
from modelcycle.cli.render import emit_json, format_value, say, table
from modelcycle.cli.state import open_registry
from modelcycle.config import MonitorConfig, load_config

if TYPE_CHECKING:
    from modelcycle.monitor.location import StoreLocation
    from modelcycle.registry import Registry

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
    from modelcycle.config import DataConfig
    from modelcycle.data import load_dataset
    from modelcycle.monitor.reference import dataset_drift

    monitor = _monitor_config(config_file)
    bundle = open_registry().open(ref)
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
    from modelcycle.errors import ConfigError
    from modelcycle.monitor.encryption import store_keys
    from modelcycle.monitor.report import monitor_report

    try:
        seconds = duration_seconds(since)
    except ValueError as error:
        raise ConfigError(f"--since: {error}") from None
    registry = open_registry()
    name = registry.resolve(ref).name
    monitor = _monitor_config(config_file)
    path = monitor_report(
        _existing_store(monitor, registry),
        name,
        since_seconds=seconds,
        out=out or Path(f"{name}-monitor.html"),
        events=registry.history(name),
        keys=store_keys(monitor.encryption),
        alpha=monitor.drift_alpha,
    )
    say(f"wrote {path}")


@app.command("rotate-key")
def rotate_key(config_file: ConfigFile = None) -> None:
    """Re-encrypt every stored prediction and feedback under the current key (the first of
    monitor.encryption's keys), those stored in plain before encryption was on too; then older keys can go.
    Restart the server with the new key first, so that it stores under it too."""
    from modelcycle.errors import ConfigError
    from modelcycle.monitor.database import open_database
    from modelcycle.monitor.encryption import store_keys

    monitor = _monitor_config(config_file)
    keys = store_keys(monitor.encryption)
    if keys is None:
        raise ConfigError(
            "monitor.encryption is off: no key to encrypt with",
            hint="give --config with a monitor: section whose encryption is enabled",
        )
    store = _existing_store(monitor, open_registry())
    with open_database(store, keys) as database:
        done = database.reseal()
    say(
        f"{store}: {done.predictions} predictions and {done.feedback} feedback rows re-encrypted "
        f"under key '{keys.current}'"
    )
    if not done.log_emptied:
        say(
            f"warning: {store}-wal may still hold rows as they were (another process had the store open); "
            "run rotate-key again with the server stopped",
            style="yellow",
        )


def _monitor_config(config_file: Path | None) -> MonitorConfig:
    return load_config(config_file).monitor if config_file is not None else MonitorConfig()


def _existing_store(monitor: MonitorConfig, registry: Registry) -> StoreLocation:
    """The prediction store ``monitor`` names (a file or a database URL; it prints without the password); a
    NotFoundError when nothing was stored in the file yet."""
    from modelcycle.errors import NotFoundError
    from modelcycle.monitor.live import store_path

    store = store_path(monitor, registry)
    if not store.exists():
        raise NotFoundError(
            f"{store}: no prediction store yet", hint="serve the model first (monitoring is on by default)"
        )
    return store
