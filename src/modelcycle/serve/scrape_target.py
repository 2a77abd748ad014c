"""One replica of a Ray deployment as a Prometheus scrape target: its metrics on a port of its own node, and a
file-based discovery file (``<folder>/<application>-<replica>.json``) that names it while the replica lives,
so one Prometheus job (``deploy/prometheus/prometheus-ray.yml``) follows replicas as Ray starts and replaces
them. A replica that dies without closing leaves its file behind: Prometheus then shows that target as down
until the file is removed."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import ray
from prometheus_client import make_wsgi_app

from modelcycle.serve.state import ServerState


class _Quiet(WSGIRequestHandler):
    """A request handler that does not log each scrape (one every few seconds per replica)."""

    def log_message(self, format: str, *args: Any) -> None:
        """Nothing: scrapes are not logged."""


class ScrapeTarget:
    """Serve ``state``'s metrics, brought up to date at each scrape, on the node's address (the one Ray knows
    the node by; metrics are plain HTTP without a token, as a single server's ``/metrics``)."""

    def __init__(self, state: ServerState, folder: Path, application: str, replica: str) -> None:
        exposition = make_wsgi_app(state.metrics.registry)

        def metrics(environ: dict[str, Any], start_response: Any) -> Any:
            state.refresh_metrics()  # queue depths and the store's counts, as /metrics does
            return exposition(environ, start_response)

        host = node_address()
        self.server: WSGIServer = make_server(host, 0, metrics, handler_class=_Quiet)
        threading.Thread(target=self.server.serve_forever, name="modelcycle-metrics", daemon=True).start()
        self.path = folder / f"{application}-{replica}.json"
        target = {
            "targets": [f"{host}:{self.server.server_port}"],
            "labels": {"replica": replica, "application": application, "node": host},
        }
        folder.mkdir(parents=True, exist_ok=True)
        staged = self.path.with_suffix(f".{os.getpid()}.tmp")  # Prometheus reads *.json only: no half file
        staged.write_text(json.dumps([target]))
        staged.replace(self.path)

    def close(self) -> None:
        """Stop answering scrapes, release the port and remove the discovery file."""
        self.server.shutdown()
        self.server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def node_address() -> str:
    """The address Ray knows this process's node by."""
    node = ray.get_runtime_context().get_node_id()
    return next(str(info["NodeManagerAddress"]) for info in ray.nodes() if info["NodeID"] == node)
