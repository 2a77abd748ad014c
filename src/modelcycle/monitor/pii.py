"""Masking of personal data before anything is stored: e-mail addresses, phone numbers, payment card numbers
(Luhn), IBANs (mod 97), IP addresses and Chinese resident ID numbers (birth date + ISO 7064 check digit).

A regular expression finds candidates; a checksum or a parser confirms them, so an order number or a
timestamp that merely looks like a card or an ID stays readable. The checks are python-stdnum's and the
phone numbers are Google's libphonenumber rules (``phonenumbers``), not hand-rolled ones.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import phonenumbers
from stdnum import iban, luhn
from stdnum.cn import ric

from modelcycle.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """A kind of personal data: candidates by pattern, confirmed by ``check`` (None: the pattern suffices)."""

    name: str
    pattern: re.Pattern[str]
    check: Callable[[str], bool] | None = None

    @property
    def placeholder(self) -> str:
        return f"[{self.name.upper()}]"


def _ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _digits(check: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda text: check(re.sub(r"[ -]", "", text))


RULES: dict[str, Rule] = {
    rule.name: rule
    for rule in (
        Rule("email", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")),
        Rule(
            "cn_id", re.compile(r"(?<![\dA-Za-z])\d{17}[\dXx](?![\dA-Za-z])"), lambda text: ric.is_valid(text)
        ),
        Rule("card", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), _digits(luhn.is_valid)),
        Rule(
            "iban",
            re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])"),
            lambda text: iban.is_valid(text),
        ),
        Rule(
            "ip",
            re.compile(r"(?<![\w.:])(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]+)(?![\w.:])"),
            _ip,
        ),
    )
}
PHONE = "phone"
CONTAINERS = (str, dict, list)  # what can hold a string
DEFAULT_RULES = (*RULES, PHONE)


class Masker:
    """Replaces personal data in text (and in every string of a JSON value) with ``[RULE]`` placeholders.

    ``rules`` picks the kinds (default: all); ``fields`` limits masking to those keys of JSON objects
    (default: every string); ``patterns`` adds named regular expressions of the user's own;
    ``phone_region`` is the country whose national phone formats count (numbers written with ``+`` count
    from any country)."""

    def __init__(
        self,
        rules: Iterable[str] = DEFAULT_RULES,
        *,
        fields: Iterable[str] | None = None,
        patterns: dict[str, str] | None = None,
        phone_region: str = "US",
    ) -> None:
        chosen = list(rules)
        unknown = [name for name in chosen if name not in RULES and name != PHONE]
        if unknown:
            raise ConfigError(
                f"monitor.pii.rules: unknown rule(s) {', '.join(unknown)}",
                hint=f"known: {', '.join(DEFAULT_RULES)}",
            )
        self.rules = [RULES[name] for name in chosen if name in RULES]
        for name, pattern in (patterns or {}).items():
            try:
                self.rules.append(Rule(name, re.compile(pattern)))
            except re.error as error:
                raise ConfigError(
                    f"monitor.pii.patterns.{name}: not a regular expression ({error})"
                ) from None
        self.phones = PHONE in chosen
        self.phone_region = phone_region
        self.fields = set(fields) if fields is not None else None
        self.counts: Counter[str] = Counter()

    def mask_text(self, text: str) -> str:
        for rule in self.rules:
            text = rule.pattern.sub(functools.partial(self._replace, rule), text)
        if self.phones and sum(character.isdigit() for character in text) >= 7:
            text = self._mask_phones(text)
        return text

    def mask(self, value: Any, *, field: str | None = None) -> Any:
        """A copy of a JSON value with its strings masked (only under ``fields`` when those are set)."""
        if isinstance(value, str):
            return self.mask_text(value) if self.fields is None or field in self.fields else value
        # numbers pass straight through: a row of 30 numeric features costs a loop, not 30 calls
        if isinstance(value, dict):
            return {
                key: self.mask(item, field=key if self.fields is not None else field)
                if isinstance(item, CONTAINERS)
                else item
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [self.mask(item, field=field) if isinstance(item, CONTAINERS) else item for item in value]
        return value

    def _replace(self, rule: Rule, match: re.Match[str]) -> str:
        found = match.group(0)
        if rule.check is not None and not rule.check(found):
            return found
        self.counts[rule.name] += 1
        return rule.placeholder

    def _mask_phones(self, text: str) -> str:
        pieces, position = [], 0
        leniency = phonenumbers.Leniency.VALID
        for match in phonenumbers.PhoneNumberMatcher(text, self.phone_region, leniency=leniency):
            pieces += [text[position : match.start], "[PHONE]"]
            position = match.end
            self.counts[PHONE] += 1
        return "".join(pieces) + text[position:] if pieces else text
