"""The whole loop (docs/architecture.md §1) in one call: ``run(config, registry, traffic)`` trains,
optimizes, exports, benchmarks, serves, watches, takes feedback, updates and promotes, composing each
stage's verb. It sits on the floor above ``update`` because it composes every stage; the training
composition it starts with stays in ``modelcycle.pipeline``, below the stages that use it."""

from modelcycle.loop.compose import LoopPlan, LoopResult, run
from modelcycle.loop.timeline import Stage, Timeline
from modelcycle.loop.traffic import Feedback, Served, Traffic

__all__ = ["Feedback", "LoopPlan", "LoopResult", "Served", "Stage", "Timeline", "Traffic", "run"]
