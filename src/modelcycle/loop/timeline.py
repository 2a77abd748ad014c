"""The loop's timeline: each stage's name, how long it took and its figures, in the order they finished."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Stage:
    """One finished stage: ``seconds`` since the previous one finished; ``figures`` a line for people."""

    name: str
    seconds: float
    figures: str


@dataclass
class Timeline:
    """Records stages as they finish, and tells ``say`` about each (the CLI prints it, the library logs)."""

    say: Callable[[str], None]
    stages: list[Stage] = field(default_factory=list)
    _clock: float = field(default_factory=time.perf_counter)

    def done(self, name: str, figures: str) -> None:
        now = time.perf_counter()
        stage = Stage(name, now - self._clock, figures)
        self.stages.append(stage)
        self.say(f"{name}: {figures} ({stage.seconds:.1f} s)")
        self._clock = now
