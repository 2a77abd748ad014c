"""``modelcycle data inspect SOURCE``."""

from __future__ import annotations

from typing import Annotated

import typer

from modelcycle.cli.options import JsonFlag
from modelcycle.cli.render import emit_json, say, table

app = typer.Typer(help="Look at data sources.", no_args_is_help=True)


@app.command("inspect")
def inspect(
    source: Annotated[
        str, typer.Argument(help="csv:PATH, parquet:PATH, jsonl:PATH, images:DIR or builtin:NAME.")
    ],
    target: Annotated[str | None, typer.Option("--target", help="The column to predict.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Rows, columns with types and missing counts, and the balance of the target."""
    from modelcycle.config import DataConfig
    from modelcycle.data import load_dataset, summarize

    summary = summarize(load_dataset(DataConfig(source=source, target=target)))
    if json_output:
        emit_json(summary)
        return
    say(f"{summary.source}: {summary.rows} rows, {summary.kind} data, task {summary.task}", style="bold")
    if summary.dropped_rows:
        say(f"{summary.dropped_rows} rows without a target value were left out", style="yellow")
    table(
        "columns",
        ["name", "type", "dtype", "missing", "distinct"],
        [[c.name, c.type, c.dtype, c.missing, c.distinct] for c in summary.columns],
    )
    if summary.class_counts:
        state = "balanced" if summary.balanced else "imbalanced"
        say(
            f"target '{summary.target}': {len(summary.class_counts)} classes, {state} "
            f"(largest / smallest class = {summary.imbalance_ratio})"
        )
        table(
            "classes",
            ["class", "rows", "share"],
            [[label, count, f"{count / summary.rows:.1%}"] for label, count in summary.class_counts.items()],
        )
    elif summary.target_stats:
        table(f"target '{summary.target}'", list(summary.target_stats), [list(summary.target_stats.values())])
