"""Everything the CLI prints: JSON for machines (stdout, nothing else on it) and rich tables for people."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

console = Console()
errors = Console(stderr=True)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def emit_json(payload: Any) -> None:
    print(json.dumps(_plain(payload), indent=2, default=str))


def say(text: str, *, style: str | None = None) -> None:
    """One line for people; the text is printed as is (no rich markup), whatever it contains."""
    console.print(Text(text, style=style or ""), highlight=False, soft_wrap=True)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A table whose cells are plain text (names, reasons and values are never read as markup)."""
    grid = Table(title=Text(title), title_justify="left")
    for column in columns:
        grid.add_column(Text(column))
    for row in rows:
        grid.add_row(*(Text("" if cell is None else format_value(cell)) for cell in row))
    console.print(grid)


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{key}={format_value(item)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(item) for item in value)
    return str(value)


def format_bytes(size: int) -> str:
    """1536 → '1.5 KB': sizes from a few bytes (a tiny MLP) to gigabytes (a language model)."""
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def metrics_table(title: str, metrics: dict[str, dict[str, float]]) -> None:
    """One row per metric, one column per split (there are more metrics than splits)."""
    keys = list(dict.fromkeys(key for values in metrics.values() for key in values))
    table(
        title,
        ["metric", *metrics],
        [[key, *(values.get(key) for values in metrics.values())] for key in keys],
    )


def print_error(message: str, hint: str | None = None) -> None:
    """One line on stderr (plus a hint line): the whole of what a user sees when a command fails."""
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if hint:
        errors.print(f"[dim]hint:[/] {escape(hint)}", highlight=False, soft_wrap=True)
