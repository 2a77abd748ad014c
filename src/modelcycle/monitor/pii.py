"""Masking of personal data before anything is stored: e-mail addresses (internationalised ones too), phone
numbers, payment card numbers (Luhn), IBANs (mod 97), IP addresses, US social security numbers and Chinese
resident ID numbers (birth date + ISO 7064 check digit).

A regular expression finds candidates; a checksum or a parser confirms them, so an order number or a
timestamp that merely looks like a card or an ID stays readable. The checks are python-stdnum's and the
phone numbers are Google's libphonenumber rules (``phonenumbers``), not hand-rolled ones.

``Masker.mask_text`` masks one string of any length, in time linear in its length (every repeat in the
patterns is bounded, so no input backtracks for long): a prompt, a chat message, a generated answer, or a
short id (``jane@example.com`` comes back as ``[EMAIL]``). ``Masker.mask`` does the same for every string of
a JSON value.

How well it does is measured on ``tests/data/pii_corpus.json`` (true positives in several languages and
look-alikes such as order numbers, ISBNs, timestamps and ``image@2x.png``): tests/test_pii.py holds recall at
95 % or more and false positives at 5 % or less.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import ipaddress
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import phonenumbers
from stdnum import iban, luhn
from stdnum.cn import ric
from stdnum.us import ssn

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


def _compact(text: str) -> str:
    """The characters of a number without the separators people write it with."""
    return re.sub(r"[\s.\-/()]", "", text)


# Where a number starts and ends: not inside a word or a longer number (whose groups are separated by space,
# dot, dash, slash or underscore). A dash or an underscore after letters is a start, so request ids such as
# "order-4111111111111111" and "user_020 7946 0958" are masked too.
_NUMBER_START = r"(?<![0-9A-Za-z.])(?<![0-9][ .\-/_])"
_NUMBER_END = r"(?![0-9A-Za-z]|[ .\-/_][0-9])"


# ---- e-mail ---------------------------------------------------------------------------------------------
# What is not part of an address: white space, the ASCII punctuation that delimits an address in prose,
# markup and URLs, and the CJK / full-width punctuation around addresses in Chinese or Japanese text. An
# exclusion rather than \w, which misses the combining marks of Devanagari, Thai, ... addresses.
_NOT_IN_ADDRESS = r"\s@<>()\[\]{}\\,;:\"`/|=?!*#&~^$\u3000-\u303f\uff01-\uff0f\uff1a-\uff20\uff5b-\uff65"
_LOCAL = rf"[^{_NOT_IN_ADDRESS}.]"  # the local part: atoms joined by dots
_LABEL = rf"[^{_NOT_IN_ADDRESS}.'%+_]"  # a domain label (Unicode: bücher.de, 例子.广告)
# Bounded repeats (RFC 5321: a local part of at most 64 characters, a label of at most 63): unbounded ones let
# a run such as "a.a.a.…" with no @ take quadratic time (40 KB: 7 s), stalling the store's writer.
_EMAIL = re.compile(
    rf"(?<!{_LOCAL})(?:{_LOCAL}{{1,64}}\.){{0,16}}{_LOCAL}{{1,64}}@(?:{_LABEL}{{1,63}}\.){{1,8}}{_LABEL}{{1,63}}"
)
# image@2x.png and icon@1.5x.jpg are file names (Apple's @2x convention), not addresses at .png
_FILE_EXTENSIONS = frozenset(
    {"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "heic", "pdf", "txt", "csv"}
    | {"json", "yaml", "yml", "xml", "html", "htm", "css", "js", "ts", "mjs", "log", "onnx", "pt", "bin"}
    | {"gz", "tgz", "tar", "zip", "mp3", "mp4", "wav", "mov", "avi", "mkv"}
)


def _email(text: str) -> bool:
    """The top-level domain is letters (any script, marks included) or punycode, and not a file extension."""
    top = text.rsplit(".", 1)[-1].lower()
    if top in _FILE_EXTENSIONS:
        return False
    return top.startswith("xn--") or all(unicodedata.category(char)[0] in "LM" for char in top)


# ---- numbers with a checksum ----------------------------------------------------------------------------
# issuers' numbers start with 2-6 (Mastercard 2/5, Amex and Diners 3, Visa 4, Discover and UnionPay 6)
_CARD = re.compile(rf"{_NUMBER_START}[2-6][0-9](?:[ .\-]?[0-9]){{11,17}}{_NUMBER_END}")


def _card(text: str) -> bool:
    """The Luhn sum, and card grouping: none, or one separator throughout (4111 1111 …, 4111-1111-…,
    4111.1111.…) after a first group of four (Amex: 3782 822463 10005). An IMEI (35-209900-176148-1) has
    a Luhn digit too, but not that grouping."""
    separators = set(re.findall(r"\D", text))
    if len(separators) > 1 or (separators and len(re.split(r"\D", text, maxsplit=1)[0]) != 4):
        return False
    return luhn.is_valid(_compact(text))


def _iban_pattern() -> re.Pattern[str]:
    """IBANs of the exact length python-stdnum's copy of the IBAN registry gives their country, upper or
    lower case, grouped with spaces or dashes. An exact length, not ``{11,30}``: in "my iban is gb82 west
    1234 5698 7654 32 thanks" a case-insensitive pattern of free length would run on into "thanks"."""
    registry = importlib.resources.files("stdnum").joinpath("iban.dat").read_text(encoding="utf-8")
    countries_by_length: defaultdict[int, list[str]] = defaultdict(list)
    for country, bban in re.findall(r'^([A-Z]{2}) .*?bban="([^"]+)"', registry, re.MULTILINE):
        countries_by_length[sum(int(count) for count in re.findall(r"(\d+)!?[nac]", bban))].append(country)
    alternatives = "|".join(
        f"(?:{'|'.join(countries)})[0-9]{{2}}(?:[ -]?[A-Z0-9]){{{length}}}"
        for length, countries in sorted(countries_by_length.items())
    )
    return re.compile(
        rf"(?<![A-Z0-9])(?=[A-Z]{{2}}[0-9]{{2}})(?:{alternatives})(?![A-Z0-9])", re.IGNORECASE | re.ASCII
    )


_SSN = re.compile(rf"{_NUMBER_START}[0-9]{{3}}([- ])[0-9]{{2}}\1[0-9]{{4}}{_NUMBER_END}")
_CN_ID = re.compile(r"(?<![0-9A-Za-z])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")


# ---- IP addresses ---------------------------------------------------------------------------------------
# a dotted quad (a port or a full stop may follow), or hex groups with colons (an embedded IPv4 tail too)
_IP = re.compile(
    r"(?<![0-9A-Za-z.:])(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?![0-9A-Za-z]|\.[0-9])"
    r"|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:(?:\.[0-9]{1,3}){3})?(?![0-9A-Za-z:]|\.[0-9]))"
)


def _ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# ---- phone numbers --------------------------------------------------------------------------------------
# Countries whose national formats (no +country code) count besides the configured region. National numbers
# are ambiguous (020 7946 0958 is a London number, 612 345 678 a Spanish mobile), hence a list, and a short
# one: each country tried costs a parse for every candidate its number pattern lets through.
DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IN", "CN", "JP", "BR")
# a run of digits and the separators phone numbers are written with ("(" only around an area code), also
# not in a URL path or an address; "+" starts an international number
_PHONE = re.compile(
    rf"{_NUMBER_START}(?<![+@/])(?:\+ ?|\((?=[0-9]{{1,5}}\)))?"
    r"[0-9][0-9 \u00a0.\-/()]{5,26}[0-9](?![0-9A-Za-z]|[ .\-/_)]?\(?[0-9])"
)
# dates (2024-05-17, 17.05.2024, 12/03/1985) and US ZIP+4 codes (90210-1234) have phone-like digit counts
_NOT_PHONES = re.compile(r"\d{1,4}([./-])\d{1,2}\1\d{1,4}|\d{5}-\d{4}")
_MOBILE = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)


def _phone_shaped(groups: list[str]) -> bool:
    """Digit groups as a national phone number is written: one block, or at most five groups of which the
    first has 2-5 digits (or is the North American trunk 1) and is not a year, and no later one is a lone
    digit. Refuses 2024-000871, 250517-0042, 124.0.6367.91, ISBN 0-8044-2957, 07 12 23 34 41 45."""
    if len(groups) == 1:
        return True
    first = groups[0]
    return (
        len(groups) <= 5
        and (2 <= len(first) <= 5 or first == "1")
        and not re.fullmatch(r"(?:19|20)\d\d", first)
        and all(len(group) > 1 for group in groups[1:])
    )


class PhoneCheck:
    """Confirms a phone number candidate with libphonenumber, trying national numbers in ``regions`` (the
    first is the home region).

    A number with ``+`` names its country, and a possible length there is enough (``+44 7700 900321`` is
    from a range Ofcom keeps for drama: possible, not "valid"); one with ``00`` must be valid. A national
    number must be phone-shaped (``_phone_shaped``, not a date) and valid in one of the regions; abroad,
    also written the way that country writes it (``_written_as_there``). A number of a range not in use
    yet counts when written exactly in its country's format (07700 900123)."""

    def __init__(self, regions: Iterable[str]) -> None:
        self.regions = tuple(dict.fromkeys(regions))
        # Abroad the digits written must be the national significant number, with or without the trunk
        # prefix: the country's pattern of significant numbers rules most countries out before a parse
        # (~50 µs each) that would refuse them anyway.
        self.screens: dict[str, tuple[re.Pattern[str], str]] = {}
        for region in self.regions[1:]:
            metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
            if metadata is not None and metadata.general_desc is not None:
                pattern = metadata.general_desc.national_number_pattern or ""
                self.screens[region] = (re.compile(pattern), metadata.national_prefix or "")

    def __call__(self, text: str) -> bool:
        groups = re.findall(r"\d+", text)
        written = "".join(groups)
        if not 7 <= len(written) <= 17:
            return False
        if text.startswith(("+", "00")):
            try:
                number = phonenumbers.parse("+" + text[2:] if text.startswith("00") else text, None)
            except phonenumbers.NumberParseException:
                return False
            if text.startswith("+"):
                return phonenumbers.is_possible_number(number)
            return phonenumbers.is_valid_number(number)
        if not _phone_shaped(groups) or _NOT_PHONES.fullmatch(text):
            return False
        return any(
            self._national(text, groups, region) for region in self.regions if self._screen(written, region)
        )

    def _screen(self, written: str, region: str) -> bool:
        if region not in self.screens:
            return True
        pattern, prefix = self.screens[region]
        if pattern.fullmatch(written):
            return True
        return bool(prefix) and written.startswith(prefix) and bool(pattern.fullmatch(written[len(prefix) :]))

    def _national(self, text: str, groups: list[str], region: str) -> bool:
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            return False
        if not phonenumbers.is_valid_number(number):
            if len(groups) == 1 or not phonenumbers.is_possible_number(number):
                return False
            return phonenumbers.format_number(number, NATIONAL) == " ".join(text.split())
        return region == self.regions[0] or self._written_as_there(number, groups, region)

    def _written_as_there(self, number: phonenumbers.PhoneNumber, groups: list[str], region: str) -> bool:
        """Whether a number valid in a country that is not the home region is written as people there
        write it: with the trunk prefix where the country's own format has one (030 12345678; China's
        138 0013 8000 has none), or without it but grouped as in the international format (Indian mobiles:
        98765 43210). As one block of digits only a mobile number counts, with its trunk prefix
        (0612345678) or of a length reference numbers and Unix timestamps rarely have (13912345678): a
        foreign fixed line without separators is too much like a reference or a barcode (036000291452
        is a valid German number and a UPC)."""
        written = "".join(groups)
        prefix = self.screens[region][1] if region in self.screens else ""
        significant = phonenumbers.national_significant_number(number)
        if written in (re.sub(r"\D", "", phonenumbers.format_number(number, NATIONAL)), prefix + significant):
            if len(groups) > 1:
                return True
            mobile = phonenumbers.number_type(number) in _MOBILE
            return mobile and ((bool(prefix) and written.startswith(prefix)) or len(written) >= 11)
        international = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        return len(groups) > 1 and re.findall(r"\d+", international)[1:] == groups


NATIONAL = phonenumbers.PhoneNumberFormat.NATIONAL
PHONE = "phone"

# One rule per kind, in the order they run: an earlier rule's placeholder hides its digits from the later
# ones (a card number is not also looked at as a phone number). The phone rule's regions are the default
# ones here; a Masker gives it its own.
RULES: dict[str, Rule] = {
    rule.name: rule
    for rule in (
        Rule("email", _EMAIL, _email),
        Rule("cn_id", _CN_ID, lambda text: ric.is_valid(text)),
        Rule("card", _CARD, _card),
        Rule("iban", _iban_pattern(), lambda text: iban.is_valid(_compact(text).upper())),
        Rule("ssn", _SSN, lambda text: ssn.is_valid(_compact(text))),
        Rule("ip", _IP, _ip),
        Rule(PHONE, _PHONE, PhoneCheck(DEFAULT_PHONE_REGIONS)),
    )
}
CONTAINERS = (str, dict, list)  # what can hold a string
DEFAULT_RULES = tuple(RULES)


class Masker:
    """Replaces personal data in text (and in every string of a JSON value) with ``[RULE]`` placeholders.

    ``rules`` picks the kinds (default: all); ``fields`` limits masking to those keys of JSON objects
    (default: every string); ``patterns`` adds named regular expressions of the user's own;
    ``phone_region`` is the country whose national phone formats count first and ``phone_regions`` the
    others whose national formats count too (numbers written with ``+`` count from any country)."""

    def __init__(
        self,
        rules: Iterable[str] = DEFAULT_RULES,
        *,
        fields: Iterable[str] | None = None,
        patterns: dict[str, str] | None = None,
        phone_region: str = "US",
        phone_regions: Iterable[str] = DEFAULT_PHONE_REGIONS,
    ) -> None:
        chosen = list(rules)
        unknown = [name for name in chosen if name not in RULES]
        if unknown:
            raise ConfigError(
                f"monitor.pii.rules: unknown rule(s) {', '.join(unknown)}",
                hint=f"known: {', '.join(DEFAULT_RULES)}",
            )
        regions = [phone_region.upper(), *(region.upper() for region in phone_regions)]
        unsupported = [region for region in regions if region not in phonenumbers.SUPPORTED_REGIONS]
        if unsupported:
            raise ConfigError(
                f"monitor.pii.phone_region: unknown region(s) {', '.join(unsupported)}",
                hint="two-letter ISO 3166 country codes, e.g. US, GB, DE",
            )
        phones = dataclasses.replace(RULES[PHONE], check=PhoneCheck(regions))
        self.rules = [phones if name == PHONE else RULES[name] for name in chosen]
        for name, pattern in (patterns or {}).items():
            try:
                self.rules.append(Rule(name, re.compile(pattern)))
            except re.error as error:
                raise ConfigError(
                    f"monitor.pii.patterns.{name}: not a regular expression ({error})"
                ) from None
        self.fields = set(fields) if fields is not None else None
        self.counts: Counter[str] = Counter()

    def mask_text(self, text: str) -> str:
        """``text`` with each piece of personal data replaced by its rule's placeholder. Any string: a
        prompt, a generated answer, or a short id (which may be an e-mail address)."""
        for rule in self.rules:
            text = rule.pattern.sub(functools.partial(self._replace, rule), text)
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
