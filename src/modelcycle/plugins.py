"""A typed name → factory registry, so that adding a model, source or optimizer is one ``@register``.

Lookups of unknown names fail with the known names and a did-you-mean, before any work starts.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from modelcycle.errors import ConfigError

T = TypeVar("T")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return " (did you mean 'x'?)" for the closest choice, or "" when nothing is close."""
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class PluginRegistry(Generic[T]):
    """Maps names to objects of one kind (e.g. architectures); ``kind`` names them in errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under ``name``; a second entry of one name is a bug."""

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str, *, field: str | None = None) -> T:
        """The entry called ``name``; ``field`` (a dotted config path) is named in the error."""
        try:
            return self._entries[name]
        except KeyError:
            where = f"{field}: " if field else ""
            raise ConfigError(
                f"{where}unknown {self.kind} '{name}'{did_you_mean(name, self._entries.keys())}",
                hint=f"known: {', '.join(sorted(self._entries))}",
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
