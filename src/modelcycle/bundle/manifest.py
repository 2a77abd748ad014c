"""``bundle.json`` and ``variant.json``: the manifests that make a directory a bundle
(docs/architecture.md §3)."""

from __future__ import annotations

from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from pydantic import Field

from modelcycle.schema import InputSchema, OutputSchema, Strict

# Bumped when a reader of the old format could misread the new one; readers refuse newer formats.
FORMAT_VERSION = 1

Verdict = Literal["passed", "rejected", "unchecked"]
# Model and variant names become directory names: no separators, no leading dot.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


def code_version() -> str:
    """The modelcycle release that wrote a bundle (for lineage)."""
    try:
        return f"modelcycle {version('modelcycle')}"
    except PackageNotFoundError:
        return "modelcycle (not installed)"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Architecture(Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class Lineage(Strict):
    """Where a version came from: enough to reproduce it or to explain a difference between two."""

    run_id: str | None = None
    data_source: str | None = None
    data_fingerprint: str | None = None
    config_hash: str | None = None
    parent: str | None = None
    code_version: str | None = None


class BundleManifest(Strict):
    """The contract every stage reads. ``files`` maps each relative path to its sha256 (bundle.json and
    variants/ excluded); ``metrics`` is ``{split: {metric: value}}``."""

    format_version: int = FORMAT_VERSION
    name: str = Field(pattern=NAME_PATTERN)
    version: int | None = None
    task: str
    architecture: Architecture
    inputs: InputSchema
    outputs: OutputSchema
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    lineage: Lineage = Field(default_factory=Lineage)
    created_at: str = Field(default_factory=utc_now)
    files: dict[str, str] = Field(default_factory=dict)


class VariantManifest(Strict):
    """An optimized or converted form of a version (e.g. ``onnx-fp32``), with its own measured figures."""

    format_version: int = FORMAT_VERSION
    name: str = Field(pattern=NAME_PATTERN)
    method: str
    params: dict[str, Any] = Field(default_factory=dict)
    runtime: str = "torch"
    size_bytes: int = 0
    metrics: dict[str, float] = Field(default_factory=dict)
    accuracy_delta: float | None = None
    latency_ms: dict[str, float] = Field(default_factory=dict)
    verdict: Verdict = "unchecked"
    created_at: str = Field(default_factory=utc_now)
    files: dict[str, str] = Field(default_factory=dict)
