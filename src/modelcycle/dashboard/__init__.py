"""The web dashboard (``modelcycle ui``, and ``/ui`` on ``modelcycle serve``): models and versions, runs and
their comparison, live monitoring, the timeline of registry events, and serving actions through the admin
API (docs/architecture.md)."""

from modelcycle.dashboard.app import create_dashboard
from modelcycle.dashboard.sources import Sources

__all__ = ["Sources", "create_dashboard"]
