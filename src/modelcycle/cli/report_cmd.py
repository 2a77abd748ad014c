"""``modelcycle report REF``: write (or rewrite) a version's report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelcycle.cli.render import say
from modelcycle.cli.state import open_registry


def report(
    ref: Annotated[str, typer.Argument(help="The version to report on, e.g. digits-cnn@production.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write here instead of the bundle's report.html.")
    ] = None,
) -> None:
    """One HTML page: metrics, training curves, confusion matrix and ROC on the test split, variants and
    their bench figures, global importance and explained test rows."""
    from modelcycle.report import write_report

    bundle = open_registry().open(ref)
    say(f"wrote {write_report(bundle, out=out)}")
