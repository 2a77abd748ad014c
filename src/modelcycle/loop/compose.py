"""``run(config, registry, traffic)``: the whole loop of docs/architecture.md §1 composed from each
stage's verb, every arrow a typed result — train (evaluated on its splits) → optimize → export → bench →
production → serve (monitoring on) → traffic → feedback → update (fine-tune, gate) → canary → promotion or
rollback → reports. The config says how the model is trained, served, watched and updated; ``LoopPlan`` how
a freshly trained version is optimized and measured; ``traffic`` what the served model is asked and told."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from modelcycle.bench import BenchReport, bench, choose_variant
from modelcycle.bundle import Bundle
from modelcycle.config import PipelineConfig
from modelcycle.errors import TrainingError
from modelcycle.export import ExportResult, export_onnx
from modelcycle.loop.timeline import Stage, Timeline
from modelcycle.loop.traffic import Served, Traffic
from modelcycle.monitor.database import open_database
from modelcycle.monitor.encryption import store_keys
from modelcycle.monitor.live import store_path
from modelcycle.monitor.quality import live_quality
from modelcycle.monitor.report import monitor_report
from modelcycle.optimize import OptimizeResult, quantize
from modelcycle.optimize.quantize import Quantization, Runtime
from modelcycle.pipeline import TrainResult, train
from modelcycle.registry import Registry
from modelcycle.registry.lookup import PRODUCTION
from modelcycle.report import write_report
from modelcycle.serve import create_app
from modelcycle.serve.background import background_server
from modelcycle.tasks import TASKS
from modelcycle.update import AdminClient, UpdateResult, update
from modelcycle.update.loop import canary

logger = logging.getLogger(__name__)
REPORT_SECONDS = 3600  # the loop report covers the last hour of the prediction store


@dataclass(frozen=True)
class LoopPlan:
    """How the loop optimizes and measures the version it trains (defaults: what fits 2 CPU cores in
    seconds), and who it names in the registry's events."""

    quantizations: tuple[Quantization, ...] = ("dynamic-int8",)
    runtime: Runtime = "torch"
    onnx: bool = True
    bench_batch_sizes: tuple[int, ...] = (1, 32)
    bench_seconds: float = 0.5
    actor: str = "loop"


@dataclass
class LoopResult:
    """Each stage's typed result, filled in as the loop goes: a loop whose update registers no candidate
    stops after the update stage (``update.candidate`` is None), with no canary and no reports."""

    metric: str  # the task's primary metric, which every figure below is in
    stages: list[Stage]
    trained: TrainResult
    variants: list[OptimizeResult] = field(default_factory=list)
    export: ExportResult | None = None
    bench: BenchReport | None = None
    alerts: list[str] = field(default_factory=list)  # raised while the model was served, before the update
    live_before: float | None = None  # production's live metric on the labelled traffic
    update: UpdateResult | None = None  # the decision: rejected, skipped, promoted or rolled_back
    live_after: float | None = None  # the candidate's live metric during its canary
    reports: list[Path] = field(default_factory=list)
    requests: int = 0  # predictions and feedback the traffic sent (admin calls not counted)
    failed_requests: int = 0

    @property
    def promoted(self) -> bool:
        return self.update is not None and self.update.outcome == "promoted"


def run(
    config: PipelineConfig,
    registry: Registry,
    traffic: Traffic,
    *,
    plan: LoopPlan | None = None,
    say: Callable[[str], None] = logger.info,
) -> LoopResult:
    """Run every stage once in ``registry``; ``say`` hears about each stage as it finishes. The server
    runs in a background thread on 127.0.0.1 and stops when the loop ends, Ctrl-C included."""
    plan = plan or LoopPlan()
    timeline = Timeline(say)
    trained = train(config, registry)
    if trained is None:
        raise TrainingError("the loop runs in one process; start it without torchrun")
    production = registry.open(trained.ref)
    metric = TASKS.get(production.manifest.task).primary_metric
    result = LoopResult(metric, timeline.stages, trained)
    tested = trained.metrics.get("test", {}).get(metric)  # none without a test split
    timeline.done("train", f"{trained.ref}, test {metric} {_figure(tested)}")
    _optimize(production, plan, timeline, result)
    registry.set_alias(trained.ref, PRODUCTION, actor=plan.actor, reason="trained, optimized and benchmarked")
    timeline.done("register", f"{trained.ref} is production")
    token = secrets.token_hex(16)
    app = create_app(registry, [config.name], config.serve, admin_token=token, monitoring=config.monitor)
    with (
        background_server(app) as url,
        Served(config.name, url, registry, config.monitor, timeline) as served,
    ):
        timeline.done("serve", f"{url} (monitoring on, admin token set)")
        try:
            decided = _feedback_and_update(config, registry, traffic, served, production, result)
            if decided.candidate is not None:
                candidate = registry.open(decided.candidate)
                _canary(config, registry, traffic, served, (production, candidate), decided, token, result)
        finally:
            result.requests, result.failed_requests = served.requests, served.failed_requests
    if result.update is None or result.update.candidate is None:
        return result
    for ref in (trained.ref, result.update.candidate):
        result.reports.append(write_report(registry.open(ref)))
    timeline.done("reports", ", ".join(str(path) for path in result.reports))
    return result


def _optimize(production: Bundle, plan: LoopPlan, timeline: Timeline, result: LoopResult) -> None:
    """The freshly trained version's variants, its ONNX export and its benchmark."""
    for method in plan.quantizations:
        result.variants.extend(quantize(production, method, runtime=plan.runtime))
    if plan.onnx:
        result.export = export_onnx(production)
    timeline.done("optimize + export", f"variants {', '.join(production.variant_names())}")
    result.bench = bench(production, batch_sizes=plan.bench_batch_sizes, seconds=plan.bench_seconds)
    timeline.done("bench", f"auto serves {choose_variant(production)} at batch 1")


def _feedback_and_update(
    config: PipelineConfig,
    registry: Registry,
    traffic: Traffic,
    served: Served,
    production: Bundle,
    result: LoopResult,
) -> UpdateResult:
    """Traffic, its labels sent back as feedback, production's live quality on them, then ``update``."""
    labels = traffic.before_update(served)
    result.alerts = served.alerts()
    for item in labels:
        served.feedback(item)
    manifest = production.manifest
    keys = store_keys(config.monitor.encryption)
    with open_database(store_path(config.monitor, registry), keys) as database:
        before = live_quality(
            database,
            manifest.name,
            manifest.task,
            manifest.outputs.labels,
            window=config.update.window,
            now=time.time(),
            version=manifest.version,
        )
    result.live_before = before.metrics.get(result.metric)
    served.timeline.done(
        "feedback",
        f"{len(labels)} labels; live {result.metric} of {production.ref} on {traffic.name} "
        f"{_figure(result.live_before)}",
    )
    decided = update(registry, manifest.name, config.update, config.monitor)
    result.update = decided
    recent = decided.judgement.recent_traffic if decided.judgement else None
    served.timeline.done(
        "update",
        f"{decided.outcome}: {decided.reason}; recent-traffic {result.metric} "
        f"{_figure(recent.base if recent else None)} → {_figure(recent.candidate if recent else None)}",
    )
    return decided


def _canary(
    config: PipelineConfig,
    registry: Registry,
    traffic: Traffic,
    served: Served,
    versions: tuple[Bundle, Bundle],
    decided: UpdateResult,
    token: str,
    result: LoopResult,
) -> None:
    """The registered candidate as a canary beside production while traffic keeps coming, then promoted
    or rolled back by its live quality; the loop report (drift, live quality, the timeline) written."""
    production, candidate = versions
    stop = threading.Event()
    sender = threading.Thread(target=traffic.during_canary, args=(served, stop), name="modelcycle-traffic")
    sender.start()
    store = store_path(config.monitor, registry)
    keys = store_keys(config.monitor.encryption)
    try:
        admin = AdminClient(served.url, token)
        result.update = canary(
            registry, admin, decided, candidate, production, config.update, store, keys=keys
        )
    finally:
        stop.set()
        sender.join(timeout=60)
    watched = result.update.canary or {}
    live, beside = watched.get("candidate", {}), watched.get("production", {})
    result.live_after = live.get(result.metric)
    served.timeline.done(
        "canary",
        f"{result.update.outcome}: {result.update.reason}; production in the same window: "
        f"{_figure(beside.get(result.metric))} over {beside.get('samples', 0)}",
    )
    name = production.manifest.name
    result.reports.append(
        monitor_report(
            store,
            name,
            since_seconds=REPORT_SECONDS,
            out=registry.home / f"{name}-monitor.html",
            events=registry.history(name),
            keys=keys,
            alpha=config.monitor.drift_alpha,
        )
    )


def _figure(value: float | None) -> str:
    """A metric to four places, or ``nan`` where none was measured (no labelled answers yet)."""
    return f"{float('nan') if value is None else value:.4f}"
