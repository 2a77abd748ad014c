"""How ``modelcycle serve`` may be reached: from this machine only, or beyond it, and then with an admin
token and over TLS (the token and the callers' data must not cross a network in clear) unless TLS is
explicitly left to a proxy in front. The certificate and key are loaded once here, before the server
starts, so that a wrong path or a key that does not match is one line naming the flag, not uvicorn's
traceback."""

from __future__ import annotations

import hashlib
import ipaddress
import ssl

from modelcycle.config import ServeConfig
from modelcycle.errors import ConfigError

ADMIN_TOKEN = "MODELCYCLE_ADMIN_TOKEN"


def token_digest(token: str) -> str:
    """What a server keeps of the admin token: its SHA-256, so a cluster's replicas can check callers without
    the token itself being written into the cluster's configuration."""
    return hashlib.sha256(token.encode()).hexdigest()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_files(settings: ServeConfig) -> tuple[str | None, str | None]:
    """uvicorn's ``ssl_certfile`` and ``ssl_keyfile`` (both None: plain HTTP), checked: both given,
    readable, a key that matches the certificate."""
    certificate, key = settings.ssl_certfile, settings.ssl_keyfile
    if certificate is None and key is None:
        return None, None
    if certificate is None or key is None:
        missing = "--ssl-certfile" if certificate is None else "--ssl-keyfile"
        raise ConfigError("TLS needs both a certificate and its private key", parameter=missing)
    try:  # an empty password: a passphrase-protected key fails here instead of prompting on the terminal
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certificate, key, password=b"")
    except (OSError, ssl.SSLError) as error:
        reason = error.strerror or str(error) if isinstance(error, OSError) else str(error)
        raise ConfigError(
            f"--ssl-certfile {certificate} / --ssl-keyfile {key}: cannot load them ({reason})",
            hint="give a PEM certificate (chain) and the unencrypted PEM key it was issued for",
        ) from None
    return str(certificate), str(key)


def check_exposure(settings: ServeConfig, admin_token: str | None, *, tls: bool) -> None:
    """Refuse to listen beyond this machine without an admin token, or over plain HTTP unless
    ``allow_plain_http`` says a proxy in front terminates TLS."""
    if is_loopback(settings.host):
        return
    if admin_token is None:
        raise ConfigError(
            f"--host {settings.host}: refusing to serve beyond this machine without an admin token",
            hint=f"set {ADMIN_TOKEN}, or bind 127.0.0.1",
        )
    if not tls and not settings.allow_plain_http:
        raise ConfigError(
            f"--host {settings.host}: refusing to serve beyond this machine over plain HTTP (the admin "
            "token and the requests' data would cross the network in clear)",
            hint="give --ssl-certfile and --ssl-keyfile, or --allow-plain-http when a proxy in front "
            "terminates TLS",
        )
