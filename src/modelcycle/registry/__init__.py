"""The model registry: runs and metrics, models, versions, aliases and the audit log
(docs/architecture.md §4)."""

from modelcycle.registry.catalog import ModelSummary, Registry, default_home
from modelcycle.registry.events import EventRecord
from modelcycle.registry.lookup import VersionRecord
from modelcycle.registry.refs import ModelRef, parse_ref
from modelcycle.registry.runs import RunRecord, RunStore

__all__ = [
    "EventRecord",
    "ModelRef",
    "ModelSummary",
    "Registry",
    "RunRecord",
    "RunStore",
    "VersionRecord",
    "default_home",
    "parse_ref",
]
