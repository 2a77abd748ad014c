"""The ModelcycleError family: every failure a user can cause or fix.

Each class carries the process exit code the CLI uses and the HTTP status the server uses, so both boundaries
convert errors in one place. Messages read "what, where, expected, got"; the ``hint`` says how to fix it, in
terms of the request or the config, never of a command-line flag: the library does not know who called it.
An error about one argument names it as ``parameter`` (its name in the Python call and the HTTP request),
which leads the message; the CLI names that parameter by its own flag instead.
"""

from __future__ import annotations


class ModelcycleError(Exception):
    """Base of every error modelcycle raises on purpose."""

    exit_code: int = 1
    http_status: int = 500

    def __init__(self, message: str, *, hint: str | None = None, parameter: str | None = None) -> None:
        super().__init__(message)
        self.detail = message
        self.hint = hint
        self.parameter = parameter

    @property
    def message(self) -> str:
        """What went wrong, led by the parameter at fault if any (``method: unknown method 'x'``)."""
        return self.named(self.parameter)

    def named(self, name: str | None) -> str:
        """The message with the parameter at fault, if any, called ``name`` (the CLI passes its flag)."""
        return f"{name}: {self.detail}" if self.parameter is not None and name else self.detail

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(ModelcycleError):
    """The pipeline config or a command-line option is invalid."""

    exit_code = 2
    http_status = 400


class DataError(ModelcycleError):
    """A data source is missing, unreadable or unfit for the task."""

    exit_code = 3
    http_status = 422


class BundleError(ModelcycleError):
    """A bundle on disk is corrupt, tampered with, or of a format this code does not understand."""

    exit_code = 4
    http_status = 500


class NotFoundError(ModelcycleError):
    """A model, version, alias or run that does not exist."""

    exit_code = 5
    http_status = 404


class RegistryError(ModelcycleError):
    """A registry operation that is refused (e.g. removing a version an alias points at)."""

    exit_code = 6
    http_status = 409


class TrainingError(ModelcycleError):
    """Training could not proceed (diverged, or the model does not fit the data)."""

    exit_code = 7
    http_status = 500


class ExportError(ModelcycleError):
    """A model could not be converted (an operator the format lacks) or its conversion disagrees with it."""

    exit_code = 9
    http_status = 422


class MissingDependencyError(ModelcycleError):
    """An optional package needed for this feature is not installed."""

    exit_code = 8
    http_status = 501


class RequestError(ModelcycleError):
    """A request to the server does not match the model's schema (shape, type, features, values, size)."""

    exit_code = 10
    http_status = 400


class ConflictError(RequestError):
    """A request that contradicts what the server holds (feedback for a prediction that has a different
    answer already)."""

    http_status = 409


class OverloadedError(ModelcycleError):
    """The server's queue for a model is full, or a request waited longer than its timeout."""

    exit_code = 11
    http_status = 503


class AuthError(ModelcycleError):
    """A management request without the admin token, or with a wrong one."""

    exit_code = 12
    http_status = 401


class EncryptionError(ModelcycleError):
    """An encrypted value of the prediction store cannot be read: its key is not among those given, or it
    does not authenticate (tampered with, or moved from another row or column). The server answers it as
    unavailable (it cannot read its own store), never as a bug of its own."""

    exit_code = 13
    http_status = 503
