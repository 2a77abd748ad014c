"""The ``modelcycle`` command: a typer root whose sub-commands each live in their own module. Errors are
converted here, in one place: a ModelcycleError prints one line and exits with its code (the parameter at
fault named by its flag); ``--debug`` shows the traceback."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from modelcycle import __version__
from modelcycle.cli import (
    bench_cmd,
    config_cmd,
    data_cmd,
    demo_cmd,
    evaluate_cmd,
    explain_cmd,
    export_cmd,
    generate_cmd,
    import_cmd,
    models_cmd,
    monitor_cmd,
    optimize_cmd,
    report_cmd,
    runs_cmd,
    serve_cmd,
    train_cmd,
    tune_cmd,
    ui_cmd,
    update_cmd,
)
from modelcycle.cli.render import print_error
from modelcycle.cli.state import STATE
from modelcycle.errors import ModelcycleError

app = typer.Typer(
    name="modelcycle",
    help="Carry a neural model through its whole life: data → train → evaluate → … → serve → update.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(config_cmd.app, name="config")
app.add_typer(data_cmd.app, name="data")
app.add_typer(models_cmd.app, name="models")
app.add_typer(monitor_cmd.app, name="monitor")
app.add_typer(runs_cmd.app, name="runs")
app.command("train")(train_cmd.train)
app.command("evaluate")(evaluate_cmd.evaluate)
app.command("generate")(generate_cmd.generate)
app.command("tune")(tune_cmd.tune)
app.command("ui")(ui_cmd.ui)
app.command("tune-worker", hidden=True)(tune_cmd.tune_worker)
app.command("import")(import_cmd.import_checkpoint)
app.command("export")(export_cmd.export)
app.command("bench")(bench_cmd.bench)
app.command("optimize")(optimize_cmd.optimize)
app.command("serve")(serve_cmd.serve)
app.command("explain")(explain_cmd.explain)
app.command("report")(report_cmd.report)
app.command("update")(update_cmd.update)
app.command("demo")(demo_cmd.demo)

INTERNAL_ERROR_EXIT = 70


def _version(value: bool) -> None:
    if value:
        print(f"modelcycle {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    home: Annotated[
        Path | None, typer.Option("--home", envvar="MODELCYCLE_HOME", help="Registry folder.")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    STATE.debug = debug
    STATE.home = home
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except ModelcycleError as error:
        if STATE.debug:
            traceback.print_exc()
        print_error(error.named(flag(error.parameter)), error.hint)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        print_error("interrupted")
        sys.exit(130)
    except Exception as error:  # the CLI boundary: a bug must still not dump a traceback on the user
        if STATE.debug:
            traceback.print_exc()
        print_error(
            f"internal error: {type(error).__name__}: {error}", "rerun with --debug for the traceback"
        )
        sys.exit(INTERNAL_ERROR_EXIT)


def flag(parameter: str | None) -> str | None:
    """The command line's name for a library parameter: the option whose Python name it is, of the command
    that ran or of a group above it (``method`` → ``--method``, ``overrides`` → ``--set``); else the
    parameter's own name, as the library and the HTTP API call it."""
    if parameter is None:
        return None
    command = typer.main.get_command(app)
    options = list(command.params)
    for token in sys.argv[1:]:
        subcommands = getattr(command, "commands", {})  # a group's, by name
        if token in subcommands:
            command = subcommands[token]
            options += command.params
    names = (
        option.opts[0]
        for option in options
        if option.param_type_name == "option" and option.name == parameter
    )
    return next(names, parameter)
