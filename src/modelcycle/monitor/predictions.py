"""The prediction store's one API: what it holds and ``PredictionDatabase``, the protocol that the writer
process, the monitoring round, feedback, ``update``, the report and the demo call. No SQL lives outside
its implementations (``modelcycle.monitor.database`` holds the SQLite one, which owns the schema, and
``open_database``); a second backend (PostgreSQL, issue 16) is one more class with these methods and one
more branch in ``open_database``. Light on purpose (no numpy): the writer process imports it.

Stored inputs and class probabilities are JSON: the writer hands them over as JSON text (it encodes them
once, outside the database's transaction), readers get them back decoded. A database opened with keys
(``modelcycle.monitor.encryption``) seals what it stores about people and opens it again on reading, so
callers see the same values either way."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, NamedTuple, Protocol

from modelcycle.errors import OverloadedError

# A stored prediction, one row of a request: the order of the tuples ``PredictionDatabase.append`` takes.
# ``inputs`` and ``probabilities`` are JSON text; ``prediction`` a class, a value or generated text.
PREDICTION_COLUMNS = (
    "request_id",
    "row",
    "model",
    "version",
    "protocol",
    "created",
    "latency_ms",
    "inputs",
    "prediction",
    "score",
    "probabilities",
)


class DatabaseError(OverloadedError):
    """The database failed an operation (locked past its timeout, disk full, a corrupt file). The server
    answers it as unavailable for now (503 with Retry-After), never as a bug of its own."""


class LabelledPrediction(NamedTuple):
    """A stored prediction that feedback labelled: what live quality scores."""

    label: str | None  # the true class (classification)
    value: float | None  # the true value (regression)
    score: float | None  # the predicted class's probability, or the predicted value
    probabilities: list[float] | None  # every class's probability


class LabelledInput(NamedTuple):
    """The inputs of a labelled prediction as the caller sent them (masked), with the truth."""

    inputs: Any
    label: str | None
    value: float | None


class StoredInput(NamedTuple):
    """A stored prediction's inputs and what was predicted: what drift compares with the reference."""

    inputs: Any
    prediction: str | None


class Traffic(NamedTuple):
    """One stored prediction as the report plots it; ``predicted_class`` is None for values and text."""

    created: float
    latency_ms: float
    version: int
    predicted_class: str | None


class TrafficSlice(NamedTuple):
    """One slice of a window of traffic: every prediction in [start, end) counted, the newest few kept."""

    start: float
    end: float
    predictions: int
    sample: list[Traffic]  # the newest of the slice's predictions, oldest first


class QualityRow(NamedTuple):
    """One live quality figure of a monitoring round (``samples``: labelled predictions it scored)."""

    model: str
    version: int | None  # None: every version together (computed for alerts, never stored)
    window: str
    metric: str
    value: float
    samples: int
    created: float


class DriftRow(NamedTuple):
    """One feature's drift test of a monitoring round."""

    model: str
    feature: str
    method: str
    score: float
    drifted: bool
    rows: int
    created: float


class Resealed(NamedTuple):
    """What ``PredictionDatabase.reseal`` re-encrypted: rows of predictions and of feedback; and whether
    the write-ahead log, which may still hold the rows as they were, was emptied (not while another
    connection, a running server's writer, holds it)."""

    predictions: int
    feedback: int
    log_emptied: bool = True


class PredictionDatabase(Protocol):
    """Where stored predictions, feedback, live quality and drift live. Every write is its own transaction
    and is committed when the method returns. Times are seconds since the epoch; ``since`` bounds are
    inclusive. Use it as a context manager (or call ``close``)."""

    def append(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Store predictions (tuples in ``PREDICTION_COLUMNS`` order), all or none; a row whose
        (request_id, row) is stored already replaces it."""

    def retain(self, retention_seconds: float, max_rows: int, *, now: float) -> None:
        """Delete what is older than the retention period, then the first written predictions beyond
        ``max_rows``, then feedback whose prediction is gone, then quality and drift figures older than
        the period. Raises ``DatabaseError`` when the database fails (the writer tries again later)."""

    def find(self, request_id: str, row: int) -> tuple[str, int] | None:
        """The model and version of a stored prediction; None if it is not stored."""

    def add_feedback(
        self, request_id: str, row: int, label: str | None, value: float | None, *, created: float
    ) -> tuple[str | None, float | None] | None:
        """Join the truth to a stored prediction; None when it is stored, else the (label, value) given
        before, which stands (the first answer is kept: feedback is not last-write-wins for anyone)."""

    def labelled(self, model: str, *, since: float, version: int | None = None) -> list[LabelledPrediction]:
        """The labelled predictions of ``model`` (one version, or all) made since ``since``."""

    def labelled_inputs(self, model: str, *, since: float) -> list[LabelledInput]:
        """The inputs and truth of ``model``'s labelled predictions made since ``since``, oldest first."""

    def recent_inputs(self, model: str, *, since: float, limit: int) -> list[StoredInput]:
        """The newest ``limit`` predictions of ``model`` made since ``since``, newest first."""

    def traffic(self, model: str, *, since: float) -> list[Traffic]:
        """Every prediction of ``model`` made since ``since``, oldest first."""

    def first_prediction(self, model: str, *, since: float) -> float | None:
        """When ``model``'s first prediction since ``since`` was made; None when there is none."""

    def traffic_slices(self, model: str, *, edges: Sequence[float], per_slice: int) -> list[TrafficSlice]:
        """``model``'s traffic in the slices between consecutive ``edges``: each slice's count of predictions
        and its newest ``per_slice`` (what a live chart draws whatever the traffic)."""

    def count_labelled(self, model: str, *, since: float) -> int:
        """How many of ``model``'s predictions made since ``since`` have feedback."""

    def add_quality(self, rows: Iterable[QualityRow]) -> None:
        """Store live quality figures."""

    def quality(self, model: str, *, since: float) -> list[QualityRow]:
        """``model``'s live quality figures stored since ``since``, oldest first."""

    def add_drift(self, rows: Iterable[DriftRow]) -> None:
        """Store drift tests."""

    def latest_drift(self, model: str, *, since: float) -> list[DriftRow]:
        """The drift tests of ``model``'s latest check since ``since``, lowest score first."""

    def sealing_key(self) -> str | None:
        """The id of the key that encrypted the newest stored prediction; None when it is plain or there is
        none."""

    def reseal(self) -> Resealed:
        """Re-encrypt under the current key every stored prediction and feedback that is not (sealed with an
        older key, or plain), a page of rows a transaction. Needs the database opened with keys."""

    def close(self) -> None:
        """Release the connection."""

    def __enter__(self) -> PredictionDatabase: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...
