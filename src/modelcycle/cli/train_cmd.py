"""``modelcycle train CONFIG [--resume] [--nproc N]``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from modelcycle.cli.options import JsonFlag, Overrides
from modelcycle.cli.render import console, emit_json, format_value, metrics_table, say
from modelcycle.cli.state import STATE, open_registry

if TYPE_CHECKING:
    from modelcycle.pipeline import TrainResult

SHOWN = ("train_loss", "valid_accuracy", "valid_rmse", "samples_per_second")


def train(
    config_file: Annotated[Path, typer.Argument(help="Pipeline YAML.")],
    overrides: Overrides = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the interrupted run of this config.")
    ] = False,
    nproc: Annotated[
        int | None,
        typer.Option("--nproc", min=1, help="Train data-parallel in N processes on this machine (torchrun)."),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option("--ray", help="Train data-parallel on this Ray cluster (HOST:PORT of its head)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", min=1, help="With --ray: workers [one per GPU of the cluster, else per CPU]."
        ),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Train the model a config describes and register it as a new version."""
    from modelcycle.config import load_config
    from modelcycle.pipeline import train as train_pipeline
    from modelcycle.pipeline import validate
    from modelcycle.train.distributed import launch, shutdown

    config = load_config(config_file, overrides or [])
    if ray_address is not None or workers is not None:
        from modelcycle.cli.train_ray import train_on_ray

        on_ray = train_on_ray(
            config, ray_address, workers=workers, nproc=nproc, resume=resume, quiet=json_output
        )
        show(on_ray, json_output=json_output)
        return
    if nproc is not None and nproc > 1:
        validate(config)  # fail here once, not in every process
        arguments = ["train", str(config_file), *(f"--set={item}" for item in overrides or [])]
        arguments += ["--resume"] * resume + ["--json"] * json_output
        raise typer.Exit(launch(nproc, arguments, home=STATE.home))
    registry = open_registry()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        disable=json_output,
    )
    try:
        with progress:
            epochs = progress.add_task(f"train {config.name}", total=config.train.epochs, status="")

            def on_epoch(epoch: int, record: dict[str, float]) -> None:
                shown = {key: value for key, value in record.items() if key in SHOWN}
                progress.update(epochs, completed=epoch, status=format_value(shown))

            result = train_pipeline(config, registry, resume=resume, on_epoch=on_epoch)
    except BaseException:
        shutdown(together=False)
        raise
    shutdown(together=True)
    if result is not None:  # None: a rank other than 0 of a distributed run; rank 0 reports
        show(result, json_output=json_output)


def show(result: TrainResult, *, json_output: bool) -> None:
    """What a training produced: its reference, metrics, run and folder, as a table or as JSON."""
    if json_output:
        emit_json(
            {"ref": result.ref, "metrics": result.metrics, "run_id": result.run_id, "path": str(result.path)}
        )
        return
    stopped = ", stopped early" if result.stopped_early else ""
    metrics_table(
        f"{result.ref} (best epoch {result.best_epoch}{stopped}, run {result.run_id[:8]})", result.metrics
    )
    say(f"registered {result.ref} at {result.path}", style="bold")
