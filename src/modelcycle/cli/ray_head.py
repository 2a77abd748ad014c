"""The head node of a Ray cluster named by ``--ray HOST:PORT`` (of ``modelcycle serve`` and ``modelcycle
train``): checked to answer before anything is opened, then joined; each failure one line naming ``--ray``."""

from __future__ import annotations

import logging
import socket

from modelcycle.errors import ConfigError

REACH_TIMEOUT_S = 5.0


def check_head(address: str) -> None:
    """A clear error at once when ``address`` is not ``HOST:PORT`` or nothing listens there (Ray itself
    retries for minutes before it gives up)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"'{address}' is not HOST:PORT of a Ray head node", parameter="--ray")
    try:
        socket.create_connection((host, int(port)), timeout=REACH_TIMEOUT_S).close()
    except OSError as error:
        raise ConfigError(
            f"nothing answers at '{address}' ({error.strerror or error})",
            hint="start the cluster with `ray start --head --port PORT` and give that address",
            parameter="--ray",
        ) from None


def join_cluster(address: str) -> None:
    """Connect this process to the cluster at ``address`` (checked by ``check_head``), its workers' output
    kept in their logs rather than mixed into the command's; the caller ends it with ``ray.shutdown()``."""
    import ray

    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise ConfigError(f"cannot join the Ray cluster at '{address}': {error}", parameter="--ray") from None
