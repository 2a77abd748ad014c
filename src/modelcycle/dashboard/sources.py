"""What the dashboard reads: the registry, the prediction store (when there is one) and, where it runs inside
a server or next to one, that server's metrics. Manifests are read once per version: a registered
``bundle.json`` never changes (the registry keeps its hash), so a page of versions costs file reads only the
first time it is shown."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Sources:
    """``exposition``: the Prometheus text of the server the dashboard watches (time to first token lives
    only there), or None; ``alpha``: the monitor's ``drift_alpha``, the line drift had to cross."""

    registry: Registry
    store: StoreLocation | None = None
    keys: Keyring | None = None
    alpha: float = ALPHA
    exposition: Callable[[], bytes] | None = None
    _opened: _OpenStore = field(default_factory=lambda: _OpenStore(), compare=False, repr=False)

    @property
    def cache(self) -> Path:
        """Where computed views that outlive a request are kept (global importance per version)."""
        return self.registry.home / "dashboard"

    def manifest(self, record: VersionRecord) -> BundleManifest:
        """The version's manifest, checked against the hash the registry keeps (read once per version)."""
        return _bundle(str(self.registry.folder(record)), record.sha256).manifest

    def variants(self, record: VersionRecord) -> list[VariantManifest]:
        """The version's variants as their manifests say now (a benchmark adds figures to them)."""
        return _bundle(str(self.registry.folder(record)), record.sha256).variant_manifests()

    @contextmanager
    def database(self) -> Iterator[PredictionDatabase | None]:
        """The prediction store, or None when nothing was stored yet. One connection serves every page, a
        page at a time (opening a PostgreSQL store checks its schema under a lock: not once a request)."""
        with self._opened.lock:
            if self._opened.database is None:
                if self.store is None or not self.store.exists():
                    yield None
                    return
                self._opened.database = open_database(self.store, self.keys)
            yield self._opened.database

    def close(self) -> None:
        """Release the store's connection (the registry is the caller's to close)."""
        with self._opened.lock:
            if self._opened.database is not None:
                self._opened.database.close()
                self._opened.database = None


class _OpenStore:
    """The store's one open connection and the lock that takes turns on it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.database: PredictionDatabase | None = None


@functools.lru_cache(maxsize=8192)
def _bundle(folder: str, sha256: str) -> Bundle:
    """A registered version's bundle, its manifest verified, its weights not re-hashed (a page only reads)."""
    try:
        return Bundle(folder, verify=False, manifest_sha256=sha256)
    except NotFoundError:
        raise BundleError(f"{folder}: the registered version's files are missing") from None
