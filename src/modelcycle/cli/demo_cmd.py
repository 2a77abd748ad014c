"""``modelcycle demo``: the whole loop on built-in data (what ``make demo`` runs)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from modelcycle.cli.render import say, table
from modelcycle.errors import ModelcycleError


def demo(
    home: Annotated[
        Path | None, typer.Option("--home", help="Registry folder for the demo [a new temporary folder].")
    ] = None,
) -> None:
    """train → optimize → export → bench → register → serve → traffic → shift → drift alert → feedback →
    update → canary → promote, on scikit-learn's breast-cancer data; prints each stage's figures, reports."""
    from modelcycle.demo import run_demo

    folder = home or Path(tempfile.mkdtemp(prefix="modelcycle-demo-"))
    say(f"demo registry: {folder}", style="bold")
    result = run_demo(folder, say=lambda line: say(f"  {line}"))
    table(
        "demo",
        ["stage", "seconds", "figures"],
        [[stage.name, f"{stage.seconds:.1f}", stage.figures] for stage in result.stages],
    )
    old, new = result.old_live_accuracy, result.new_live_accuracy
    say(
        f"shifted traffic detected: {'yes' if result.drift_detected else 'NO'}; live accuracy on it: "
        f"old {old if old is None else f'{old:.4f}'}, updated {new if new is None else f'{new:.4f}'}; "
        f"promoted: {'yes' if result.promoted else 'NO'}; "
        f"requests {result.requests}, failed {result.failed_requests}",
        style="bold",
    )
    for path in result.reports:
        say(f"report: {path}")
    improved = old is not None and new is not None and new > old
    if not (result.drift_detected and improved and result.promoted and result.failed_requests == 0):
        raise ModelcycleError("the demo did not complete the loop (see the figures above)")
