"""Serving: several models in one FastAPI server — Open Inference Protocol v2, a simple JSON API, an admin API
for in-process promotion, canaries and shadows — each version behind its own adaptive batcher."""

from modelcycle.serve.app import create_app
from modelcycle.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
