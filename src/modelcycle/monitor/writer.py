"""The prediction store's writer: a process of its own (``python -m modelcycle.monitor.writer``), so that
masking personal data, the database's inserts, checkpoints and retention never hold the server's GIL. In a
thread of the server the same work took ~10 µs a record on a quiet machine but 32–37 µs beside the busy
serving thread of a tabular model; here it takes ~5 µs a record, and the server's share (decoding and
framing) another ~5 µs (benchmarks/results/monitor.md has what that costs in throughput).

It reads frames from stdin: first the settings (with the store's keys when it is encrypted: a pipe of its
own parent's, which nothing else reads), then batches of records, each answered on stdout with what failed
and what was masked. An empty batch is a heartbeat that lets retention run
when no traffic comes. It ends at the end of its input, which also happens when the server dies."""

from __future__ import annotations

import json
import logging
import math
import os
import struct
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

import orjson

from modelcycle.monitor.database import dumps, open_database
from modelcycle.monitor.encryption import Keyring
from modelcycle.monitor.location import StoreLocation
from modelcycle.monitor.pii import Masker
from modelcycle.monitor.predictions import DatabaseError

logger = logging.getLogger("modelcycle.monitor.writer")

FRAME_HEADER = struct.Struct(">I")  # each frame: its length, then that many bytes of JSON
ORJSON, STANDARD_JSON = b"o", b"j"  # a frame's first byte: how its JSON was written
RETENTION_EVERY_S = 60


def write_frame(stream: IO[bytes], value: Any) -> None:
    """Send ``value`` (JSON with numpy arrays) as one frame. Frames orjson refuses (integers beyond 64 bits,
    which it would also read back as floats) go through the standard library, and say so."""
    try:
        payload = ORJSON + orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        payload = STANDARD_JSON + dumps(value)
    stream.write(FRAME_HEADER.pack(len(payload)) + payload)
    stream.flush()


def read_frame(stream: IO[bytes]) -> Any:
    """The next frame's value; None at the end of the stream (also when it ends mid-frame)."""
    header = stream.read(FRAME_HEADER.size)
    if len(header) < FRAME_HEADER.size:
        return None
    (size,) = FRAME_HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    body = memoryview(payload)[1:]
    return orjson.loads(body) if payload[:1] == ORJSON else json.loads(bytes(body))


def stored_rows(records: list[list[Any]], masker: Masker | None) -> Iterator[tuple[Any, ...]]:
    """The stored predictions of a batch, as tuples in ``PREDICTION_COLUMNS``' order. A record is
    ``[request_id, model, version, protocol, created, latency_ms, inputs, encoded, decoded, generated]``:
    ``inputs`` holds one JSON value per row (masked here), or when ``encoded`` the JSON text each row is
    stored as (model-ready tensors: numbers, nothing personal); ``decoded`` per row ``[prediction, score,
    probabilities]``, empty when the outputs are not predictions; ``generated`` a language model's text
    (masked here too: an answer can repeat a prompt's
    personal data), stored as the prediction."""
    for (
        request_id,
        model,
        version,
        protocol,
        created,
        latency_ms,
        inputs,
        encoded,
        decoded,
        generated,
    ) in records:
        if encoded:
            texts = inputs
        else:
            values = [masker.mask(value) for value in inputs] if masker is not None else inputs
            texts = [dumps(value).decode() for value in values]
        if generated is not None and masker is not None:
            generated = masker.mask_text(generated)  # whatever `fields` names: it has no field
        for row, text in enumerate(texts):
            prediction, score, probabilities = decoded[row] if decoded else (generated, None, None)
            yield (
                request_id,
                row,
                model,
                version,
                protocol,
                created,
                latency_ms,
                text,
                prediction,
                score,
                None if probabilities is None else dumps(probabilities).decode(),
            )


def serve(source: IO[bytes], sink: IO[bytes]) -> None:
    """Write every batch that arrives on ``source`` and acknowledge it on ``sink``, until ``source`` ends."""
    settings = read_frame(source)
    if settings is None:
        return
    masking = settings["masking"]
    masker = Masker(**masking) if masking is not None else None
    keys = Keyring.parse(settings["keys"], "the server's keys") if settings.get("keys") else None
    store = StoreLocation(settings["path"])  # logged without its password
    with open_database(store, keys) as database:
        last_retention = -math.inf
        while (records := read_frame(source)) is not None:
            if time.monotonic() - last_retention > RETENTION_EVERY_S:
                last_retention = time.monotonic()
                try:
                    database.retain(settings["retention_seconds"], settings["max_rows"], now=time.time())
                except DatabaseError as error:  # the next round tries again
                    logger.error("prediction store %s: retention failed: %s", store, error)
            failed = 0
            try:
                database.append(stored_rows(records, masker))
            except Exception:  # a boundary: a bad batch is reported and counted, the next one is written
                logger.exception("prediction store %s: %d records lost", store, len(records))
                failed = len(records)
            masked = dict(masker.counts) if masker is not None else {}
            if masker is not None:
                masker.counts.clear()
            write_frame(sink, {"failed": failed, "masked": masked})


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # the answers' pipe is the writer's alone: whatever a library prints goes to the server's log instead
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, answers)
