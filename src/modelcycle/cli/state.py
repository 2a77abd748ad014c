"""Options of the root command that every sub-command reads (set once by the root callback)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelcycle.registry import Registry


@dataclass
class CliState:
    debug: bool = False
    home: Path | None = None


STATE = CliState()


def open_registry() -> Registry:
    """The registry under ``--home`` (or ``$MODELCYCLE_HOME``, default ``./.modelcycle``); imported here so
    that ``--help`` stays fast."""
    from modelcycle.registry import Registry

    return Registry(STATE.home)
