"""``modelcycle models list|show|alias|history|rm``."""

from __future__ import annotations

from typing import Annotated

import typer

from modelcycle.cli.options import JsonFlag
from modelcycle.cli.render import emit_json, metrics_table, say, table
from modelcycle.cli.state import open_registry

app = typer.Typer(help="Registered models, versions and aliases.", no_args_is_help=True)
Reason = Annotated[str | None, typer.Option("--reason", help="Why (kept in the audit log).")]


@app.command("list")
def list_models(json_output: JsonFlag = False) -> None:
    """Every registered model with its latest version and aliases."""
    models = open_registry().list_models()
    if json_output:
        emit_json(models)
        return
    table(
        "models",
        ["name", "task", "latest", "versions", "aliases"],
        [[m.name, m.task, m.latest_version, m.version_count, m.aliases] for m in models],
    )


@app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@VERSION, NAME@ALIAS or NAME@latest.")],
    json_output: JsonFlag = False,
) -> None:
    """One version: task, architecture, schema, metrics, lineage, variants and where its files are."""

    registry = open_registry()
    record = registry.resolve(ref)
    bundle = registry.bundle(record)
    manifest = bundle.manifest
    payload = {
        "name": record.name,
        "version": record.version,
        "ref": record.ref,
        "aliases": list(record.aliases),
        "task": manifest.task,
        "architecture": manifest.architecture,
        "metrics": manifest.metrics,
        "inputs": manifest.inputs,
        "outputs": manifest.outputs,
        "lineage": manifest.lineage,
        "variants": bundle.variant_names(),
        "created_at": manifest.created_at,
        "path": str(bundle.path),
    }
    if json_output:
        emit_json(payload)
        return
    aliases = f" ({', '.join(record.aliases)})" if record.aliases else ""
    architecture = f"{manifest.architecture.name} {manifest.architecture.params}"
    say(f"{record.ref}{aliases}: {manifest.task}, {architecture}", style="bold")
    metrics_table("metrics", manifest.metrics)
    lineage = manifest.lineage
    say(
        f"run {lineage.run_id}, data {lineage.data_source} ({(lineage.data_fingerprint or '')[:12]}), "
        f"{lineage.code_version}",
    )
    say(f"variants: {', '.join(bundle.variant_names()) or 'none'}")
    say(f"path: {bundle.path}")


@app.command("alias")
def alias(
    ref: Annotated[str, typer.Argument(help="The version, e.g. digits-cnn@3.")],
    name: Annotated[str, typer.Argument(help="Alias to set, e.g. production.")],
    delete: Annotated[bool, typer.Option("--delete", help="Remove the alias instead.")] = False,
    reason: Reason = None,
) -> None:
    """Point an alias at a version (moving `production` keeps the old one as `previous`)."""
    registry = open_registry()
    if delete:
        registry.remove_alias(ref, name, reason=reason)
        say(f"removed alias {name} of {ref.split('@')[0]}")
        return
    record = registry.set_alias(ref, name, reason=reason)
    say(f"{record.name}@{name} → version {record.version}")


@app.command("history")
def history(
    name: Annotated[str, typer.Argument(help="Model name.")],
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the newest N events.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """The audit log of a model: registrations, aliases, promotions, removals."""
    events = open_registry().history(name, limit=limit)
    if json_output:
        emit_json(events)
        return
    table(
        f"history of {name}",
        ["at", "event", "version", "actor", "reason", "details"],
        [
            [
                e.at[:19],
                e.kind,
                e.version,
                e.actor,
                e.reason,
                {
                    key: value
                    for key, value in e.details.items()
                    if value is not None and not isinstance(value, dict)
                },
            ]
            for e in events
        ],
    )


@app.command("rm")
def remove(
    ref: Annotated[str, typer.Argument(help="The version to delete, e.g. digits-cnn@2.")],
    reason: Reason = None,
    json_output: JsonFlag = False,
) -> None:
    """Delete a version and its files (refused while an alias points at it)."""
    record = open_registry().remove_version(ref, reason=reason)
    if json_output:
        emit_json({"removed": record.ref})
        return
    say(f"removed {record.ref}")
