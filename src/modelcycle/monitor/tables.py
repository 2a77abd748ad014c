"""What the prediction store's two backends (``database``: SQLite, ``postgres``: PostgreSQL) share: which
columns are sealed and how a row goes to disk, the reads that are the same standard SQL in both (written
with ``?``, which ``postgres`` turns into psycopg's ``%s``), turning what a read returns into the API's
values (opened when sealed), and raising each backend's own errors as ``DatabaseError``. Each backend keeps
what it does its own way: the schema, the replacing insert, retention, re-sealing, feedback's first answer.

``window`` is quoted: a reserved word in PostgreSQL, an identifier SQLite reads the same."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from modelcycle.errors import EncryptionError
from modelcycle.monitor.encryption import Keyring, key_id, reveal, reveal_number, seal, stored_plain
from modelcycle.monitor.predictions import (
    PREDICTION_COLUMNS,
    DatabaseError,
    DriftRow,
    LabelledInput,
    LabelledPrediction,
    StoredInput,
    Traffic,
    TrafficSlice,
)

P = ParamSpec("P")
R = TypeVar("R")

# What a row says about one person: sealed when the database has keys. The rest stays plain for the joins,
# retention, the report's plots and alerts; NULL stays NULL (it only says that a model gives no score).
SEALED_PREDICTION = ("inputs", "prediction", "score", "probabilities")
SEALED_FEEDBACK = ("label", "value")
SEALED_AT = [(PREDICTION_COLUMNS.index(column), f"predictions.{column}") for column in SEALED_PREDICTION]
RESEAL_PAGE = 1000  # rows a transaction: the writer waits for one page at most (milliseconds)

FEEDBACK_OF = "SELECT label, value FROM feedback WHERE request_id = ? AND row = ?"
INSERT_QUALITY = (
    'INSERT INTO quality (model, version, "window", metric, value, samples, created) '
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
INSERT_DRIFT = (
    "INSERT INTO drift (model, feature, method, score, drifted, rows, created) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
FIND = "SELECT model, version FROM predictions WHERE request_id = ? AND row = ?"
LABELLED = (
    "SELECT p.request_id, p.row, f.label, f.value, p.score, p.probabilities "
    "FROM predictions p JOIN feedback f ON f.request_id = p.request_id AND f.row = p.row "
    "WHERE p.model = ? AND p.created >= ?"
)
LABELLED_OF_VERSION = LABELLED + " AND p.version = ?"
LABELLED_INPUTS = (
    "SELECT p.request_id, p.row, p.inputs, f.label, f.value FROM predictions p JOIN feedback f "
    "ON f.request_id = p.request_id AND f.row = p.row WHERE p.model = ? AND p.created >= ? "
    "ORDER BY p.created"
)
# driven from feedback, which is never larger than the predictions it labels: a join let SQLite walk every
# prediction of the window instead (144 ms for a week of a million predictions and no feedback at all)
COUNT_LABELLED = (
    "SELECT COUNT(*) FROM feedback f WHERE EXISTS (SELECT 1 FROM predictions p "
    "WHERE p.request_id = f.request_id AND p.row = f.row AND p.model = ? AND p.created >= ?)"
)
RECENT_INPUTS = (
    "SELECT request_id, row, inputs, prediction FROM predictions WHERE model = ? AND created >= ? "
    "ORDER BY created DESC LIMIT ?"
)
# a class has a score; generated text (a language model's answer) is no class to count
TRAFFIC = (
    "SELECT request_id, row, created, latency_ms, version, "
    "CASE WHEN score IS NULL THEN NULL ELSE prediction END "
    "FROM predictions WHERE model = ? AND created >= ? ORDER BY created"
)
# the live dashboard's slices of a window: the first prediction, each slice's count (from the index alone)
# and its newest rows
FIRST_PREDICTION = "SELECT MIN(created) FROM predictions WHERE model = ? AND created >= ?"
SLICE_COUNT = "SELECT COUNT(*) FROM predictions WHERE model = ? AND created >= ? AND created < ?"
SLICE_NEWEST = (
    "SELECT request_id, row, created, latency_ms, version, "
    "CASE WHEN score IS NULL THEN NULL ELSE prediction END "
    "FROM predictions WHERE model = ? AND created >= ? AND created < ? ORDER BY created DESC LIMIT ?"
)
QUALITY = (
    'SELECT model, version, "window", metric, value, samples, created FROM quality '
    "WHERE model = ? AND created >= ? ORDER BY created"
)
LATEST_DRIFT = (
    "SELECT model, feature, method, score, drifted, rows, created FROM drift WHERE model = ? AND created = "
    "(SELECT MAX(created) FROM drift WHERE model = ? AND created >= ?) ORDER BY score"
)


class Located(Protocol):
    """A backend that says where it is (``where``: its file, or its URL without the password)."""

    @property
    def where(self) -> str: ...


Backend = TypeVar("Backend", bound=Located)


def translated(
    errors: type[Exception],
) -> Callable[[Callable[Concatenate[Backend, P], R]], Callable[Concatenate[Backend, P], R]]:
    """A decorator raising the backend's own ``errors`` as ``DatabaseError`` naming where the store is and
    the operation, so callers (the writer, the server, update) handle one error whatever the backend; a
    value that does not open names the store too."""

    def decorate(method: Callable[Concatenate[Backend, P], R]) -> Callable[Concatenate[Backend, P], R]:
        def translating(self: Backend, /, *args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return method(self, *args, **kwargs)
            except errors as error:
                raise DatabaseError(f"{self.where}: {method.__name__}: {error}") from error
            except EncryptionError as error:
                raise EncryptionError(f"{self.where}: {error.detail}", hint=error.hint) from None

        return translating

    return decorate


def stored(rows: Iterable[tuple[Any, ...]], keys: Keyring | None) -> Iterator[tuple[Any, ...]]:
    """Stored predictions with their ``SEALED_PREDICTION`` values as they go to disk: sealed in place
    (request id and row) with ``keys``; without, as they are unless one would read as sealed
    (``encryption.stored_plain``)."""
    for row in rows:
        values = list(row)
        for position, column in SEALED_AT:
            value = values[position]
            values[position] = (
                stored_plain(value) if keys is None else seal(keys, value, column, values[0], values[1])
            )
        yield tuple(values)


def stored_truth(
    keys: Keyring | None, request_id: str, row: int, label: str | None, value: float | None
) -> tuple[Any, Any]:
    """A feedback's label and value as they go to disk: sealed in place with ``keys``."""
    if keys is None:
        return stored_plain(label), value
    label_sealed, value_sealed = (
        seal(keys, given, f"feedback.{column}", request_id, row)
        for column, given in zip(SEALED_FEEDBACK, (label, value), strict=True)
    )
    return label_sealed, value_sealed


def revealed_truth(
    keys: Keyring | None, request_id: str, row: int, truth: tuple[Any, Any]
) -> tuple[str | None, float | None]:
    """A stored feedback's (label, value) as it was given."""
    label, value = truth
    return (
        reveal(keys, label, "feedback.label", request_id, row),
        reveal_number(keys, value, "feedback.value", request_id, row),
    )


def resealed_page(
    keys: Keyring, table: str, columns: tuple[str, ...], page: Iterable[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """Of a page of ``(request_id, row, *columns, *place)`` rows of ``table``, those not wholly sealed with
    the current key, as ``(*columns sealed with it, *place)``: ``place`` (what the backend finds the row
    by) follows the columns so that the tuple fills ``UPDATE ... SET columns ... WHERE place``."""
    names = [f"{table}.{column}" for column in columns]
    changed = []
    for request_id, row, *rest in page:
        values, place = rest[: len(columns)], rest[len(columns) :]
        if any(value is not None and key_id(value) != keys.current for value in values):
            resealed = [
                seal(keys, reveal(keys, value, name, request_id, row), name, request_id, row)
                for name, value in zip(names, values, strict=True)
            ]
            changed.append((*resealed, *place))
    return changed


def labelled_predictions(keys: Keyring | None, rows: Iterable[tuple[Any, ...]]) -> list[LabelledPrediction]:
    """The rows ``LABELLED`` reads, opened."""
    labelled = []
    for request_id, row, label, value, score, shares in rows:
        probabilities = reveal(keys, shares, "predictions.probabilities", request_id, row)
        labelled.append(
            LabelledPrediction(
                *revealed_truth(keys, request_id, row, (label, value)),
                reveal_number(keys, score, "predictions.score", request_id, row),
                json.loads(probabilities) if probabilities else None,
            )
        )
    return labelled


def labelled_inputs(keys: Keyring | None, rows: Iterable[tuple[Any, ...]]) -> list[LabelledInput]:
    """The rows ``LABELLED_INPUTS`` reads, opened."""
    return [
        LabelledInput(
            json.loads(reveal(keys, inputs, "predictions.inputs", request_id, row)),
            *revealed_truth(keys, request_id, row, (label, value)),
        )
        for request_id, row, inputs, label, value in rows
    ]


def stored_inputs(keys: Keyring | None, rows: Iterable[tuple[Any, ...]]) -> list[StoredInput]:
    """The rows ``RECENT_INPUTS`` reads, opened."""
    return [
        StoredInput(
            json.loads(reveal(keys, inputs, "predictions.inputs", request_id, row)),
            reveal(keys, prediction, "predictions.prediction", request_id, row),
        )
        for request_id, row, inputs, prediction in rows
    ]


def traffic(keys: Keyring | None, rows: Iterable[tuple[Any, ...]]) -> list[Traffic]:
    """The rows ``TRAFFIC`` reads, opened."""
    return [
        Traffic(created, latency, version, reveal(keys, predicted, "predictions.prediction", request_id, row))
        for request_id, row, created, latency, version, predicted in rows
    ]


def traffic_slices(
    keys: Keyring | None,
    execute: Callable[[str, tuple[Any, ...]], Any],
    model: str,
    edges: Sequence[float],
    per_slice: int,
) -> list[TrafficSlice]:
    """Each slice between consecutive ``edges``: how many predictions it holds and its newest ``per_slice``
    (oldest first). A query per slice keeps every read on the (model, created) index, so a window of a
    million predictions costs its count and a bounded sample, not a million rows."""
    slices = []
    for start, end in itertools.pairwise(edges):
        count = int(execute(SLICE_COUNT, (model, start, end)).fetchone()[0])
        rows = list(execute(SLICE_NEWEST, (model, start, end, per_slice))) if count else []
        slices.append(TrafficSlice(start, end, count, traffic(keys, reversed(rows))))
    return slices


def drift_rows(rows: Iterable[tuple[Any, ...]]) -> list[DriftRow]:
    """The rows ``LATEST_DRIFT`` reads (``drifted``: an integer in SQLite, a boolean in PostgreSQL)."""
    return [
        DriftRow(name, feature, method, score, bool(drifted), count, created)
        for name, feature, method, score, drifted, count, created in rows
    ]
