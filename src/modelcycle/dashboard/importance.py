"""A version's global importance (permutation importance on its test split) for the version page. It takes
seconds, so it is computed once, in the background, the first time a page asks, and kept as JSON beside
the registry (``<home>/dashboard/importance/<name>/<version>.json``, written atomically): a version never
changes, so neither does its importance. The page asks again until it is there."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from modelcycle.bundle.files import write_json_atomic
from modelcycle.dashboard.sources import Sources
from modelcycle.errors import ModelcycleError
from modelcycle.registry import VersionRecord

logger = logging.getLogger(__name__)
REPEATS = 3
TOP_FEATURES = 20

_running: set[Path] = set()
_failed: dict[Path, str] = {}  # unexpected failures, kept for this process only (they may not recur)
_lock = threading.Lock()


def importance_of(sources: Sources, record: VersionRecord) -> dict[str, Any]:
    """``{"status": "ready", "importance": {...}}``, ``{"status": "computing"}`` (started now or earlier),
    or ``{"status": "unavailable", "reason": ...}`` (no test split kept, or inputs without named
    features); an unavailable answer is kept too, so it is not computed again."""
    path = sources.cache / "importance" / record.name / f"{record.version}.json"
    if path.is_file():
        return dict(json.loads(path.read_text(encoding="utf-8")))
    with _lock:
        if path in _failed:
            return {"status": "unavailable", "reason": _failed[path]}
        if path not in _running:
            _running.add(path)
            threading.Thread(
                target=_compute, args=(sources, record, path), name=f"importance {record.ref}", daemon=True
            ).start()
    return {"status": "computing"}


def _compute(sources: Sources, record: VersionRecord, path: Path) -> None:
    from modelcycle.explain import permutation_importance
    from modelcycle.predictor import Predictor, training_split

    try:
        bundle = sources.registry.bundle(record)
        found = permutation_importance(
            Predictor.load(bundle), training_split(bundle, "test"), repeats=REPEATS
        )
        payload = found.to_json()
        payload["features"] = payload["features"][:TOP_FEATURES]
        answer: dict[str, Any] = {"status": "ready", "importance": payload}
    except ModelcycleError as error:
        answer = {"status": "unavailable", "reason": error.message}
    except Exception as error:  # a failure here must reach the page, not end a thread unseen
        logger.exception("global importance of %s failed", record.ref)
        with _lock:
            _failed[path] = f"{type(error).__name__}: {error}"
            _running.discard(path)
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, answer)
    finally:
        with _lock:
            _running.discard(path)
