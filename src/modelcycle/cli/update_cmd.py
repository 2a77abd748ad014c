"""``modelcycle update REF [--watch] [--server URL] [--json]``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from modelcycle.cli.options import JsonFlag
from modelcycle.cli.render import emit_json, say, table
from modelcycle.cli.state import open_registry


def update(
    ref: Annotated[
        str, typer.Argument(help="The production version, e.g. breast-cancer-mlp (production alias).")
    ],
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="A pipeline YAML whose update: and monitor: sections apply."),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server", help="The running server (canary, promotion); token from MODELCYCLE_ADMIN_TOKEN."
        ),
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Keep running: on every alert and on a schedule.")
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Fine-tune a candidate on labelled feedback (plus replayed training rows), gate it against production on
    the original holdout and on recent traffic, register it, canary it on the server, then promote it or roll
    it back by its live quality. Every decision is an event in `modelcycle models history`."""
    from modelcycle.config import MonitorConfig, UpdateConfig, load_config
    from modelcycle.serve.transport import ADMIN_TOKEN
    from modelcycle.update import AdminClient, UpdateResult
    from modelcycle.update import update as run_update
    from modelcycle.update.loop import watch as watch_loop

    pipeline = load_config(config_file) if config_file is not None else None
    settings = pipeline.update if pipeline is not None else UpdateConfig()
    monitoring = pipeline.monitor if pipeline is not None else MonitorConfig()
    url = server or settings.server
    admin = AdminClient(url, os.environ.get(ADMIN_TOKEN)) if url else None
    registry = open_registry()

    def show(result: UpdateResult) -> None:
        if json_output:
            emit_json(result)
            return
        say(f"{result.model}: {result.outcome} — {result.reason}", style="bold")
        if result.judgement:
            judged = result.judgement
            rows = [
                [holdout, verdict.base, verdict.candidate, verdict.passed]
                for holdout, verdict in (
                    ("original holdout", judged.original_holdout),
                    ("recent traffic", judged.recent_traffic),
                )
            ]
            table(
                f"{judged.metric}: production vs candidate",
                ["holdout", "production", "candidate", "within tolerance"],
                rows,
            )
        if result.canary:
            say(f"canary: {result.canary}")

    if watch:
        watch_loop(registry, ref, settings, monitoring, admin=admin, on_result=show)
    else:
        show(run_update(registry, ref, settings, monitoring, admin=admin))
