"""What the dashboard reads: the registry, the prediction store (when there is one) and, where it runs inside
a server or next to one, that server's metrics. Manifests are read once per version: a registered
``bundle.json`` never changes (the registry keeps its hash), so a page of versions costs file reads only the
first time it is shown."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from modelcycle.bundle import Bundle, BundleManifest
from modelcycle.bundle.manifest import VariantManifest
from modelcycle.errors import BundleError, NotFoundError
from modelcycle.monitor.database import open_database
from modelcycle.monitor.drift import ALPHA
from modelcycle.monitor.encryption import Keyring
from modelcycle.monitor.location import StoreLocation
from modelcycle.monitor.predictions import PredictionDatabase
from modelcycle.registry import Registry, VersionRecord

VARIANT_MANIFEST = "variant.json"
VARIANTS = "variants"


@dataclass(frozen=True)
class Sources:
    """``exposition``: the Prometheus text of the server the dashboard watches (time to first token lives
    only there), or None; ``alpha``: the monitor's ``drift_alpha``, the line drift had to cross."""

    registry: Registry
    store: StoreLocation | None = None
    keys: Keyring | None = None
    alpha: float = ALPHA
    exposition: Callable[[], bytes] | None = None

    @property
    def cache(self) -> Path:
        """Where computed views that outlive a request are kept (global importance per version)."""
        return self.registry.home / "dashboard"

    def manifest(self, record: VersionRecord) -> BundleManifest:
        return _manifest(str(self.registry.folder(record)), record.sha256)

    def variants(self, record: VersionRecord) -> list[VariantManifest]:
        """The version's variants as their manifests say (not re-hashed: ``variant.json`` is rewritten when
        a benchmark adds figures, and the page only shows them)."""
        root = self.registry.folder(record) / VARIANTS
        found = []
        for manifest in sorted(root.glob(f"*/{VARIANT_MANIFEST}")):
            if not manifest.parent.name.startswith("."):
                found.append(VariantManifest.model_validate_json(manifest.read_text(encoding="utf-8")))
        return found

    @contextmanager
    def database(self) -> Iterator[PredictionDatabase | None]:
        """The prediction store, or None when nothing was stored yet."""
        if self.store is None or not self.store.exists():
            yield None
            return
        with open_database(self.store, self.keys) as database:
            yield database


@functools.lru_cache(maxsize=8192)
def _manifest(folder: str, sha256: str) -> BundleManifest:
    try:
        return Bundle(folder, verify=False, manifest_sha256=sha256).manifest
    except NotFoundError:
        raise BundleError(f"{folder}: the registered version's files are missing") from None
