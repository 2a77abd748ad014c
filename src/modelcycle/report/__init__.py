"""HTML reports: a version's ``report.html`` (training, quality, variants, importance, explained rows)."""

from modelcycle.report.version import write_report

__all__ = ["write_report"]
