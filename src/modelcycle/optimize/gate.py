"""The accuracy gate every optimization passes through: the candidate's primary metric on the validation
split against the base's, with an allowed drop (absolute, or relative to the base). A candidate that fails
is still written, with verdict ``rejected``, so the numbers stay inspectable; serving skips it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelcycle.tasks import lower_is_better


@dataclass(frozen=True)
class Gate:
    max_drop: float = 0.01
    relative: bool = False

    def judge(self, metric: str, base: float, candidate: float) -> GateResult:
        """How far ``candidate`` fell behind ``base`` on ``metric`` (positive = worse), and the verdict."""
        worse_by = candidate - base if lower_is_better(metric) else base - candidate
        drop = worse_by / abs(base) if self.relative and base != 0 else worse_by
        return GateResult(metric, base, candidate, candidate - base, drop, drop <= self.max_drop, self)

    def describe(self) -> dict[str, Any]:
        return {"max_drop": self.max_drop, "relative": self.relative}


@dataclass(frozen=True)
class GateResult:
    metric: str
    base: float
    candidate: float
    delta: float  # candidate − base, in the metric's own units
    drop: float  # how much worse (absolute or relative, as the gate measures it)
    passed: bool
    gate: Gate

    @property
    def verdict(self) -> str:
        return "passed" if self.passed else "rejected"
