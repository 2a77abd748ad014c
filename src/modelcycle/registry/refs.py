"""Model references: ``name`` (production if set, else latest), ``name@3``, ``name@production``,
``name@latest``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelcycle.errors import ConfigError

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}"
_REF = re.compile(rf"^(?P<name>{NAME_PATTERN})(?:@(?P<selector>[A-Za-z0-9._-]+))?$")
ALIAS_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")
RESERVED_ALIASES = frozenset({"latest"})
MAX_VERSION = 2**31 - 1  # the integer column's range on every database


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference: exactly one of ``version`` and ``alias`` is set, or neither for a bare name."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        return f"{self.name}@{self.alias}" if self.alias else self.name


def parse_ref(text: str) -> ModelRef:
    match = _REF.match(text.strip())
    if not match:
        raise ConfigError(
            f"'{text}' is not a model reference", hint="use NAME, NAME@VERSION, NAME@ALIAS or NAME@latest"
        )
    name, selector = match["name"], match["selector"]
    if selector is None:
        return ModelRef(name)
    if selector.isascii() and selector.isdigit():
        if not 0 < int(selector) <= MAX_VERSION:
            raise ConfigError(f"'{text}': version numbers run from 1 to {MAX_VERSION}")
        return ModelRef(name, version=int(selector))
    return ModelRef(name, alias=selector)


def check_alias(alias: str) -> str:
    if not ALIAS_PATTERN.match(alias) or alias in RESERVED_ALIASES:
        raise ConfigError(
            f"'{alias}' cannot be an alias",
            hint="an alias starts with a letter, then letters, digits, '.', '_' or '-'; 'latest' is reserved",
        )
    return alias
