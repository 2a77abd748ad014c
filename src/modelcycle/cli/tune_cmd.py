"""``modelcycle tune CONFIG [--trials N] [--workers K [--ray ADDRESS]]``, and the hidden ``tune-worker``
command each of its worker processes runs."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
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
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Trial processes sharing the study, each on cores/K torch threads [1: in this process].",
        ),
    ] = 1,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Run the --workers as tasks on this Ray cluster (HOST:PORT of its head). A SQLite registry "
            "serves nodes of one machine; a cluster of several machines needs a PostgreSQL registry "
            "(MODELCYCLE_DATABASE_URL) and modelcycle installed on every node.",
        ),
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
    config = load_config(config_file, overrides or [])
    if ray_address is None:
        result = tune_config(config, open_registry(), trials=trials, workers=workers)
    else:
        import ray

        from modelcycle.cli.ray_head import check_head, join_cluster

        check_head(ray_address)
        join_cluster(ray_address)
        try:
            result = tune_config(config, open_registry(), trials=trials, workers=workers, on_ray=True)
        finally:
            ray.shutdown()
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


def tune_worker(
    orders: Annotated[Path, typer.Argument(help="The worker's orders (JSON), written by `tune --workers`.")],
) -> None:
    """Run trials of a study until it has its number of trials (started by `tune --workers K`)."""
    import optuna

    from modelcycle.cli.state import STATE
    from modelcycle.tuning import run_worker

    optuna.logging.set_verbosity(optuna.logging.INFO if STATE.debug else optuna.logging.WARNING)
    # the parent stops its other workers with SIGTERM when one fails: as Ctrl-C, the trial running here is
    # recorded as failed (run and Optuna trial) instead of left running
    signal.signal(signal.SIGTERM, _interrupt)
    run_worker(orders.read_text())


def _interrupt(_signal: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt
