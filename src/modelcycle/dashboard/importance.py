"""A version's global importance (permutation importance on its test split) for the version page. It takes
seconds and a model and its data in memory, so one worker thread computes one version at a time, at most
``MAX_WAITING`` more wait (beyond that a page is told to ask later, 429), and each answer is kept as JSON
beside the registry (``<home>/dashboard/importance/<name>/<version>.json``, written atomically): a version
never changes, so neither does its importance. The page asks again until it is there.

An answer that will not change (no test split kept, inputs without named features, a damaged bundle) is
kept on disk; any other failure only in this process, so that a later process tries again."""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from modelcycle.bundle.files import write_json_atomic
from modelcycle.dashboard.sources import Sources
from modelcycle.errors import BundleError, ConfigError, DataError, ModelcycleError, OverloadedError
from modelcycle.registry import VersionRecord

logger = logging.getLogger(__name__)
REPEATS = 3
TOP_FEATURES = 20
MAX_WAITING = 4
LASTING = (BundleError, ConfigError, DataError)  # what the same version would fail with again

_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="importance")
_queued: set[Path] = set()
_failed: dict[Path, str] = {}
_lock = threading.Lock()


def importance_of(sources: Sources, record: VersionRecord) -> dict[str, Any]:
    """``{"status": "ready", "importance": {...}}``, ``{"status": "computing"}`` (queued now or earlier), or
    ``{"status": "unavailable", "reason": ...}``; an OverloadedError (429) while the queue is full."""
    path = sources.cache / "importance" / record.name / f"{record.version}.json"
    if path.is_file():
        return dict(json.loads(path.read_text(encoding="utf-8")))
    with _lock:
        if path in _failed:
            return {"status": "unavailable", "reason": _failed[path]}
        if path not in _queued:
            if len(_queued) > MAX_WAITING:
                raise Busy("global importance: other versions are being computed; ask again shortly")
            _queued.add(path)
            _worker.submit(_compute, sources, record, path)
    return {"status": "computing"}


class Busy(OverloadedError):
    """Too many versions wait for their importance: a 429, the page asks again later."""

    http_status = 429


def _compute(sources: Sources, record: VersionRecord, path: Path) -> None:
    try:
        answer = _importance(sources, record)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, answer)
    except Exception as error:  # what reaches here must reach the page, not end the worker unseen
        logger.exception("global importance of %s failed", record.ref)
        reason = error.message if isinstance(error, ModelcycleError) else f"{type(error).__name__}: {error}"
        with _lock:
            _failed[path] = reason
    finally:
        with _lock:
            _queued.discard(path)


def _importance(sources: Sources, record: VersionRecord) -> dict[str, Any]:
    from modelcycle.explain import permutation_importance
    from modelcycle.predictor import Predictor, training_split

    try:
        bundle = sources.registry.bundle(record)
        found = permutation_importance(
            Predictor.load(bundle), training_split(bundle, "test"), repeats=REPEATS
        )
    except LASTING as error:
        return {"status": "unavailable", "reason": error.message}
    payload = found.to_json()
    payload["features"] = payload["features"][:TOP_FEATURES]
    return {"status": "ready", "importance": payload}
