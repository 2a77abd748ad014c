"""The application built from the environment, for ``modelcycle serve --workers N``: uvicorn starts N
processes, each importing this factory, and each loads the models itself. Versions are changed per process,
so the admin API is off with more than one worker (a promotion must not reach only some of them; across
machines, ``--ray`` does that). Every worker writes to the one prediction store (SQLite's WAL, or PostgreSQL,
serialises the writers) and keeps its metrics in the folder the command sets up for them all; one worker at a
time runs a model's monitoring rounds."""

from __future__ import annotations

import json
import os

from fastapi import FastAPI

from modelcycle.config import MonitorConfig, ServeConfig
from modelcycle.registry import Registry
from modelcycle.serve.app import create_app

SPEC = "MODELCYCLE_SERVE_SPEC"


def spec_for_workers(refs: list[str], settings: ServeConfig, monitoring: MonitorConfig) -> str:
    return json.dumps(
        {
            "refs": refs,
            "settings": settings.model_dump(mode="json"),
            "monitor": monitoring.model_dump(mode="json"),
        }
    )


def from_environment() -> FastAPI:
    spec = json.loads(os.environ[SPEC])
    return create_app(
        Registry(),
        spec["refs"],
        ServeConfig.model_validate(spec["settings"]),
        admin_token=None,
        monitoring=MonitorConfig.model_validate(spec["monitor"]),
    )
