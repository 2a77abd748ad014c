"""``modelcycle runs list|show|compare``."""

from __future__ import annotations

from typing import Annotated

import typer

from modelcycle.cli.options import JsonFlag
from modelcycle.cli.render import emit_json, say, table
from modelcycle.cli.state import open_registry
from modelcycle.registry.runs import flat_params

# The test metrics a run list shows; `runs show` has them all.
HEADLINE = ("accuracy", "f1_macro", "rmse", "r2", "perplexity")
app = typer.Typer(help="Training runs and their metrics.", no_args_is_help=True)


@app.command("list")
def list_runs(
    name: Annotated[str | None, typer.Option("--name", help="Only runs of this config name.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
    json_output: JsonFlag = False,
) -> None:
    """The newest runs first."""
    runs = open_registry().runs.recent(name, limit=limit)
    if json_output:
        emit_json(runs)
        return
    table(
        "runs",
        ["id", "name", "status", "started", "model", "test metrics"],
        [
            [
                r.id[:8],
                r.name,
                r.status,
                r.started_at[:19],
                r.model_ref,
                {key: r.final_metrics[f"test_{key}"] for key in HEADLINE if f"test_{key}" in r.final_metrics},
            ]
            for r in runs
        ],
    )


@app.command("show")
def show(
    run_id: Annotated[str, typer.Argument(help="Run id or a unique prefix of it.")],
    json_output: JsonFlag = False,
) -> None:
    """One run: status, parameters, final metrics and the model it registered."""
    registry = open_registry()
    run = registry.runs.get(run_id)
    if json_output:
        emit_json(run)
        return
    say(f"run {run.id} ({run.name}): {run.status}, {run.started_at} → {run.ended_at or '…'}", style="bold")
    if run.error:
        say(f"error: {run.error}", style="red")
    table("final metrics", ["metric", "value"], sorted(run.final_metrics.items()))
    table("parameters", ["key", "value"], sorted(flat_params(run.params).items()))
    say(f"model: {run.model_ref or '-'}")


@app.command("compare")
def compare(
    run_ids: Annotated[list[str], typer.Argument(help="Two or more run ids (or unique prefixes).")],
    json_output: JsonFlag = False,
) -> None:
    """Side by side: the parameters that differ and every final metric."""
    registry = open_registry()
    runs = [registry.runs.get(run_id) for run_id in run_ids]
    params = [flat_params(run.params) for run in runs]
    keys = sorted({key for flat in params for key in flat})
    differing = {
        key: [flat.get(key) for flat in params]
        for key in keys
        if len({repr(flat.get(key)) for flat in params}) > 1
    }
    metric_keys = sorted({key for run in runs for key in run.final_metrics})
    metrics = {key: [run.final_metrics.get(key) for run in runs] for key in metric_keys}
    if json_output:
        emit_json({"runs": [run.id for run in runs], "params": differing, "metrics": metrics})
        return
    headers = ["", *(run.id[:8] for run in runs)]
    table("parameters that differ", headers, [[key, *values] for key, values in differing.items()])
    table("metrics", headers, [[key, *values] for key, values in metrics.items()])
