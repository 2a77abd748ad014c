"""``modelcycle tune CONFIG [--trials N]``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelcycle.cli.options import JsonFlag, Overrides
from modelcycle.cli.render import emit_json, format_value, say, table
from modelcycle.cli.state import open_registry


def tune(
    config_file: Annotated[Path, typer.Argument(help="Pipeline YAML with a tune: section.")],
    trials: Annotated[
        int | None, typer.Option("--trials", min=1, help="Total trials (default: tune.trials).")
    ] = None,
    overrides: Overrides = None,
    json_output: JsonFlag = False,
) -> None:
    """Search hyper-parameters with Optuna (TPE + median pruning), resuming an interrupted study, and
    register the best trial's model."""
    import optuna

    from modelcycle.cli.state import STATE
    from modelcycle.config import load_config
    from modelcycle.tuning import tune as tune_config

    optuna.logging.set_verbosity(optuna.logging.INFO if STATE.debug else optuna.logging.WARNING)

    result = tune_config(load_config(config_file, overrides or []), open_registry(), trials=trials)
    payload = {
        "ref": result.registered.ref,
        "study": result.study,
        "metric": result.metric,
        "direction": result.direction,
        "best_value": result.best_value,
        "best_params": result.best_params,
        "metrics": result.registered.metrics,
        "trials": {
            "complete": result.trials_complete,
            "pruned": result.trials_pruned,
            "failed": result.trials_failed,
        },
    }
    if json_output:
        emit_json(payload)
        return
    say(
        f"study {result.study}: {result.trials_complete} complete, {result.trials_pruned} pruned, "
        f"{result.trials_failed} failed",
        style="bold",
    )
    table(
        f"best {result.metric} = {result.best_value:.4g}",
        ["parameter", "value"],
        [[key, format_value(value)] for key, value in result.best_params.items()],
    )
    primary = result.metric.removeprefix("valid_")
    test_value = result.registered.metrics.get("test", {}).get(primary)
    say(f"registered {result.registered.ref} (test {primary} = {format_value(test_value)})")
