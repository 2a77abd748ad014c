"""Encryption at rest of what the prediction store holds about people: the keys, and sealing and opening one
stored value. Which columns are sealed is the database's to say (``modelcycle.monitor.database``: a
prediction's inputs and outputs, a feedback's label or value); ids, times, model names, versions, protocols,
latencies and the quality and drift figures (aggregates over many people) stay plain, because retention,
the joins and the report's plots need them and they say nothing about one person. NULL stays NULL.

The cipher is AES-256-GCM (``AESGCM`` of ``cryptography``): authenticated, in every build of the library,
1.5–2.5 µs a value here. ``MultiFernet`` rotates keys too, but takes no associated data (a value could not
be bound to its place) and its keys carry no id (a missing key could not be named). A sealed value is text,
``enc:v1:<key id>:<base64 of nonce, ciphertext and tag>``, and its associated data binds it to that header,
its table and column, and its row: a value copied to another row or column fails to authenticate instead of
reading as someone else's data. The nonce is 96 random bits, which NIST SP 800-38D bounds to 2^32 sealings a
key: 25 days of the default 500 records a second of four values each, so rotate at least monthly at that
rate.

Keys are ``id:key`` entries (the key: 32 random bytes in base64), the first current: new values are sealed
with it, and a value sealed with any key of the ring opens. Rotation: put the new key first and restart, then
``modelcycle monitor rotate-key`` re-seals older rows (and those stored before encryption was on) under it,
after which the old key can go."""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from modelcycle.errors import ConfigError, EncryptionError
from modelcycle.monitor.location import StoreLocation
from modelcycle.monitor.predictions import PredictionDatabase

if TYPE_CHECKING:  # the writer process imports this module: no pydantic there
    from modelcycle.config import EncryptionConfig

logger = logging.getLogger(__name__)
ENVIRONMENT = "MODELCYCLE_STORE_KEYS"
KEY_FILE = "monitor.encryption.key_file"
VERSION = "enc:v1:"
# Marks a plain text stored as is that would otherwise read as sealed (a generated answer a client steered
# to begin with "enc:v1:"): reading strips it once.
PLAIN = "plain:"
KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12
GIVE_KEYS = f"turn on monitor.encryption with its key in {ENVIRONMENT} or {KEY_FILE}"


class Keyring:
    """AES-256-GCM keys by id: ``current`` seals, and every key opens what it sealed."""

    def __init__(self, keys: dict[str, bytes], current: str) -> None:
        self.current = current
        self.ids = list(keys)
        self._keys = dict(keys)
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._header = f"{VERSION}{current}:"

    def __repr__(self) -> str:  # the ids, never a key
        return f"Keyring(current={self.current!r}, ids={self.ids!r})"

    @classmethod
    def parse(cls, text: str, source: str) -> Keyring:
        """The ring of ``id:base64-key`` entries (apart by commas, spaces or lines; ``#`` starts a comment),
        the first current. ``source`` says where they came from in errors, which never show a key."""
        entries = [entry for line in text.splitlines() for entry in re.split(r"[\s,]+", line.split("#")[0])]
        keys: dict[str, bytes] = {}
        for number, entry in enumerate((entry for entry in entries if entry), start=1):
            key_id, _, encoded = entry.partition(":")
            if not KEY_ID.fullmatch(key_id) or not encoded:
                raise ConfigError(
                    f"{source}: key {number} is not 'id:base64-key' "
                    "with an id of letters, digits, '_', '.' and '-'"
                )
            if key_id in keys:
                raise ConfigError(f"{source}: key id '{key_id}' is given twice")
            try:
                key = base64.b64decode(encoded, validate=True)
            except binascii.Error:
                key = b""
            if len(key) != KEY_BYTES:
                raise ConfigError(
                    f"{source}: key '{key_id}' is not {KEY_BYTES} bytes in base64",
                    hint="make one with: openssl rand -base64 32",
                )
            keys[key_id] = key
        if not keys:
            raise ConfigError(f"{source}: no keys in it", hint="give 'id:base64-key', the current key first")
        return cls(keys, next(iter(keys)))

    def text(self) -> str:
        """The ring as ``parse`` reads it, current first: how the server hands it to the writer process."""
        return ",".join(f"{key_id}:{base64.b64encode(key).decode()}" for key_id, key in self._keys.items())

    def seal(self, value: str, column: str, request_id: str, row: int) -> str:
        """``value`` of ``column`` in the row (request_id, row), sealed with the current key."""
        nonce = os.urandom(NONCE_BYTES)
        bound = _bound(self._header, column, request_id, row)
        sealed = self._ciphers[self.current].encrypt(nonce, value.encode(), bound)
        return self._header + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, sealed: str, column: str, request_id: str, row: int) -> str:
        """What ``seal`` sealed in that place; an EncryptionError when its key is not in the ring or it does
        not authenticate there."""
        key_id, _, payload = sealed[len(VERSION) :].partition(":")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise EncryptionError(
                f"{_place(column, request_id, row)}: encrypted with key '{key_id}', which is not among the "
                f"keys given ({', '.join(self.ids)})",
                hint=f"add key '{key_id}' after the current one",
            )
        try:
            raw = base64.b64decode(payload, validate=True)
            bound = _bound(f"{VERSION}{key_id}:", column, request_id, row)
            return cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], bound).decode()
        except (InvalidTag, ValueError):  # binascii.Error and UnicodeDecodeError are ValueErrors
            raise EncryptionError(
                f"{_place(column, request_id, row)}: does not authenticate under key '{key_id}' "
                "(tampered with, or moved from another row or column)"
            ) from None


def _bound(header: str, column: str, request_id: str, row: int) -> bytes:
    """The associated data of a sealed value: its header and its place (the request id last, so that no
    two places give the same bytes whatever the id holds)."""
    return f"{header}\n{column}\n{row}\n{request_id}".encode()


def _place(column: str, request_id: str, row: int) -> str:
    return f"{column} of request {request_id!r} row {row}"


def key_id(value: object) -> str | None:
    """The id of the key that sealed ``value``; None when it is plain or NULL."""
    if isinstance(value, str) and value.startswith(VERSION):
        return value[len(VERSION) :].partition(":")[0]
    return None


def seal(keys: Keyring, value: Any, column: str, request_id: str, row: int) -> str | None:
    """A stored value (text, or a number sealed as its ``repr``) sealed in its place; NULL stays NULL."""
    if value is None:
        return None
    return keys.seal(value if isinstance(value, str) else repr(float(value)), column, request_id, row)


def stored_plain(value: Any) -> Any:
    """``value`` as stored without encryption: as it is, unless it would read as sealed (or as marked)."""
    if isinstance(value, str) and value.startswith((VERSION, PLAIN)):
        return PLAIN + value
    return value


def reveal(keys: Keyring | None, value: Any, column: str, request_id: str, row: int) -> Any:
    """A stored value as it was written: opened when sealed, as it is when plain (NULL, and rows stored while
    encryption was off); sealed without ``keys`` is an EncryptionError naming the key."""
    sealed_with = key_id(value)
    if sealed_with is None:
        return value[len(PLAIN) :] if isinstance(value, str) and value.startswith(PLAIN) else value
    if keys is None:
        raise EncryptionError(
            f"{_place(column, request_id, row)}: encrypted with key '{sealed_with}', and no keys were given",
            hint=GIVE_KEYS,
        )
    return keys.open(value, column, request_id, row)


def reveal_number(keys: Keyring | None, value: Any, column: str, request_id: str, row: int) -> float | None:
    """A stored number (score, value) as it was written."""
    revealed = reveal(keys, value, column, request_id, row)
    return None if revealed is None else float(revealed)


def store_keys(config: EncryptionConfig) -> Keyring | None:
    """The keys ``config`` turns on, from its key file or else ``MODELCYCLE_STORE_KEYS``; None when it is off.
    No keys where encryption is on is a ConfigError naming where they were looked for."""
    if not config.enabled:
        return None
    if config.key_file is None:
        text = os.environ.get(ENVIRONMENT, "")
        if not text.strip():
            raise ConfigError(
                f"monitor.encryption: on, but {ENVIRONMENT} is not set and no key_file is given",
                hint=f"set {ENVIRONMENT} to 'id:base64-key' (openssl rand -base64 32), or {KEY_FILE}",
            )
        return Keyring.parse(text, ENVIRONMENT)
    path = Path(config.key_file)
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except OSError as error:
        raise ConfigError(f"{KEY_FILE}: {path}: cannot read it: {error.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):  # a warning, not a refusal: mounted secrets are often 0644
        logger.warning("%s: %s: others than its owner may read it (chmod 600 it)", KEY_FILE, path)
    return Keyring.parse(text, f"{KEY_FILE} {path}")


def check_readable(database: PredictionDatabase, keys: Keyring | None, store: StoreLocation) -> None:
    """Refuse (ConfigError) to serve from a store whose newest predictions ``keys`` cannot open: the server
    would store on but fail every monitoring round."""
    newest = database.sealing_key()
    if newest is None or (keys is not None and newest in keys.ids):
        return
    given = "monitor.encryption is off" if keys is None else f"the keys given are {', '.join(keys.ids)}"
    raise ConfigError(
        f"{store}: its newest predictions are encrypted with key '{newest}', but {given}",
        hint=f"give key '{newest}' in {ENVIRONMENT} or {KEY_FILE}",
    )
