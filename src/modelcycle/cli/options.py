"""Option types shared by several sub-commands."""

from __future__ import annotations

from typing import Annotated

import typer

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of a table.")]
Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value: --set train.optimizer.lr=1e-3 (repeatable)."),
]
