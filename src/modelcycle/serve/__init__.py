"""Serving: several models in one FastAPI server — Open Inference Protocol v2, a simple JSON API, an
OpenAI-compatible API for language models, an admin API for in-process promotion, canaries and shadows —
each version behind its own adaptive batcher. Its knobs are ``modelcycle.config.ServeConfig``."""

from modelcycle.serve.app import create_app

__all__ = ["create_app"]
