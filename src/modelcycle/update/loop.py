"""``update``: the closed loop. Labelled feedback → a fine-tuned candidate → the gate → registration → a
canary on the running server → its live quality watched → promotion, or an automatic rollback. Every
decision, with its numbers, is an event in the registry (``modelcycle models history``)."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from modelcycle.bundle import Bundle
from modelcycle.bundle.io import REPORT, VARIANTS_DIR
from modelcycle.config import MonitorConfig, UpdateConfig, duration_seconds
from modelcycle.errors import ConfigError, ModelcycleError, NotFoundError
from modelcycle.monitor.database import open_database
from modelcycle.monitor.encryption import Keyring, store_keys
from modelcycle.monitor.live import store_path
from modelcycle.monitor.quality import live_quality
from modelcycle.optimize.gate import Gate
from modelcycle.predictor import Predictor
from modelcycle.registry import Registry
from modelcycle.registry.refs import parse_ref
from modelcycle.tasks import TASKS
from modelcycle.update.candidate import Candidate, Judgement, make_candidate
from modelcycle.update.feedback import labelled_traffic

logger = logging.getLogger(__name__)
ACTOR = "update"
COPIED_BESIDE_WEIGHTS = ("weights.safetensors", "history.json", "bundle.json", VARIANTS_DIR, REPORT)


@dataclass
class UpdateResult:
    """What one update did: ``outcome`` is skipped, rejected, registered, promoted or rolled_back."""

    model: str
    production: str
    outcome: str
    reason: str
    candidate: str | None = None
    judgement: Judgement | None = None
    rows: dict[str, int] = field(default_factory=dict)
    canary: dict[str, Any] | None = None


class AdminClient:
    """The running server's admin API (bearer token). Each method asks the server to run the served model's
    transition of the same name (``modelcycle.serve.served.ServedModel``), which is also what moves the
    registry's ``production`` alias or records the event: update itself never moves an alias."""

    def __init__(self, base_url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=120)

    def canary(self, name: str, version: int, percent: float) -> dict[str, Any]:
        """Send ``percent`` of ``name``'s traffic to ``version`` (0 ends the canary); the model's status."""
        return self._post(f"/admin/models/{name}/canary", {"version": version, "percent": percent})

    def promote(self, name: str, version: int) -> dict[str, Any]:
        """Make ``version`` the primary of ``name`` (and ``production`` in the registry); its status."""
        return self._post(f"/admin/models/{name}/promote", {"version": version})

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(path, json=body)
        if response.status_code >= 400:
            raise ConfigError(
                f"{self.http.base_url}{path}: HTTP {response.status_code}: {response.text[:300]}"
            )
        payload: dict[str, Any] = response.json()
        return payload


def update(
    registry: Registry,
    ref: str,
    settings: UpdateConfig,
    monitoring: MonitorConfig,
    *,
    admin: AdminClient | None = None,
    now: float | None = None,
) -> UpdateResult:
    """Run the loop once for the version ``ref`` names (production by default)."""
    production = registry.open(ref)
    name = production.manifest.name
    store = store_path(monitoring, registry)
    if not store.exists():
        raise NotFoundError(f"{store}: no prediction store", hint="serve the model with monitoring on first")
    keys = store_keys(monitoring.encryption)
    since = (now or time.time()) - duration_seconds(settings.window)
    current = Predictor.load(production)
    traffic = labelled_traffic(store, current, since=since, keys=keys)
    labelled = 0 if traffic is None else len(traffic)
    if traffic is None or labelled < settings.min_feedback:
        reason = f"{labelled} labelled rows in the last {settings.window}; {settings.min_feedback} are needed"
        return _decided(registry, UpdateResult(name, production.ref, "skipped", reason))
    candidate = make_candidate(current, traffic, settings)
    result = UpdateResult(
        name,
        production.ref,
        "rejected",
        candidate.judgement.reason,
        judgement=candidate.judgement,
        rows=candidate.rows,
    )
    if not candidate.judgement.passed:
        return _decided(registry, result)
    registered = register_candidate(registry, production, candidate)
    result.candidate, result.outcome = registered.ref, "registered"
    _decided(registry, result)
    if admin is None:
        return result
    return canary(registry, admin, result, registered, production, settings, store, keys=keys)


def watch(
    registry: Registry,
    ref: str,
    settings: UpdateConfig,
    monitoring: MonitorConfig,
    *,
    admin: AdminClient | None,
    on_result: Callable[[UpdateResult], None],
    rounds: int | None = None,
) -> None:
    """Run ``update`` whenever a drift or quality alert is raised for the model, and on the
    ``watch_every`` schedule; until interrupted (or for ``rounds`` checks)."""
    name = registry.resolve(ref).name
    seen = max((event.id for event in registry.history(name, limit=1)), default=0)
    last_run, checks = time.time(), 0  # the schedule's first run is one period away; alerts act at once
    while rounds is None or checks < rounds:
        checks += 1
        alerts = [
            event for event in registry.history(name, limit=50) if event.id > seen and event.kind == "alert"
        ]
        seen = max([seen, *(event.id for event in alerts)])
        if alerts or time.time() - last_run >= duration_seconds(settings.watch_every):
            last_run = time.time()
            trigger = f"alert: {alerts[0].reason}" if alerts else f"schedule (every {settings.watch_every})"
            logger.info("update %s triggered by %s", name, trigger)
            try:
                on_result(update(registry, ref, settings, monitoring, admin=admin))
            except (ModelcycleError, httpx.HTTPError) as error:  # a watcher outlives one failed round
                logger.error("update %s failed: %s", name, error)
        if rounds is None or checks < rounds:
            time.sleep(settings.poll_s)


def register_candidate(registry: Registry, production: Bundle, candidate: Candidate) -> Bundle:
    """A new version: the fine-tuned weights beside production's preprocessing, profile and config, with
    production as its parent and its judgement as its metrics."""
    judgement = candidate.judgement
    metrics = {
        "test": {judgement.metric: judgement.original_holdout.candidate},
        "recent": {judgement.metric: judgement.recent_traffic.candidate},
    }
    manifest = production.manifest.model_copy(
        update={
            "version": None,
            "files": {},
            "metrics": metrics,
            "lineage": production.manifest.lineage.model_copy(
                update={"parent": production.ref, "run_id": None}
            ),
        }
    )
    with registry.builder(production.manifest.name) as builder:
        for path in production.path.iterdir():
            if path.name in COPIED_BESIDE_WEIGHTS:
                continue
            target = builder.path / path.name
            (shutil.copytree if path.is_dir() else shutil.copy2)(path, target)
        builder.write_weights(candidate.predictor.model.state_dict())
        builder.write_json(
            "history.json",
            {"best_epoch": candidate.best_epoch, "stopped_early": False, "epochs": candidate.history},
        )
        return registry.register(
            builder, manifest, actor=ACTOR, reason=f"fine-tuned on feedback from {production.ref}"
        )


def canary(
    registry: Registry,
    admin: AdminClient,
    result: UpdateResult,
    candidate: Bundle,
    production: Bundle,
    settings: UpdateConfig,
    store: Any,
    *,
    keys: Keyring | None = None,
) -> UpdateResult:
    """Send ``canary_percent`` of traffic to the candidate, watch both versions' live quality on the answers
    labelled since (in the store, read with ``keys`` when it is encrypted), then promote or roll back."""
    name, version = candidate.manifest.name, int(candidate.manifest.version or 0)
    started = time.time()
    admin.canary(name, version, settings.canary_percent)
    labels = candidate.manifest.outputs.labels
    task = candidate.manifest.task
    metric = result.judgement.metric if result.judgement else TASKS.get(task).primary_metric
    while True:
        elapsed = time.time() - started
        window = f"{int(elapsed) + 2}s"
        with open_database(store, keys) as database:
            live = live_quality(database, name, task, labels, window=window, now=time.time(), version=version)
            base = live_quality(
                database,
                name,
                task,
                labels,
                window=window,
                now=time.time(),
                version=production.manifest.version,
            )
        enough = live.samples >= settings.canary_min_samples and metric in live.metrics
        if enough or elapsed > settings.canary_timeout_s:
            break
        time.sleep(settings.poll_s)
    result.canary = {
        "percent": settings.canary_percent,
        "seconds": round(time.time() - started, 1),
        "candidate": {"samples": live.samples, metric: live.metrics.get(metric)},
        "production": {"samples": base.samples, metric: base.metrics.get(metric)},
    }
    if not enough:
        return _roll_back(
            registry,
            admin,
            result,
            f"only {live.samples} labelled canary answers in {settings.canary_timeout_s:g} s",
        )
    # production's live figure over the same window; before any is labelled, its figure on recent traffic
    reference = base.metrics.get(metric, result.judgement.recent_traffic.base if result.judgement else 0.0)
    verdict = Gate(max_drop=settings.rollback_drop).judge(metric, reference, live.metrics[metric])
    if not verdict.passed:
        reason = (
            f"canary live {metric} {live.metrics[metric]:.4f} trails production's {reference:.4f} "
            f"by {verdict.drop:.4f}"
        )
        return _roll_back(registry, admin, result, reason)
    admin.promote(name, version)
    result.outcome = "promoted"
    result.reason = f"canary live {metric} {live.metrics[metric]:.4f} over {live.samples} labelled answers"
    return _decided(registry, result)


def _roll_back(registry: Registry, admin: AdminClient, result: UpdateResult, reason: str) -> UpdateResult:
    """End the canary: all traffic back on production."""
    assert result.candidate is not None
    admin.canary(result.model, _version(result.candidate), 0)
    result.outcome, result.reason = "rolled_back", reason
    return _decided(registry, result)


def _decided(registry: Registry, result: UpdateResult) -> UpdateResult:
    """Log the decision and record it, with its numbers, as an event in the registry."""
    logger.info("update %s: %s (%s)", result.model, result.outcome, result.reason)
    version = _version(result.candidate) if result.candidate else None
    details = {
        "production": result.production,
        "judgement": result.judgement.model_dump(mode="json") if result.judgement else None,
        "rows": result.rows,
        "canary": result.canary,
    }
    registry.log_event(
        result.model,
        f"update_{result.outcome}",
        version=version,
        actor=ACTOR,
        reason=result.reason,
        details=details,
    )
    return result


def _version(ref: str) -> int:
    version = parse_ref(ref).version
    assert version is not None  # registered references always carry their number
    return version
