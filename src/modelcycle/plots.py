"""Figures as PNG bytes or inline base64, so an HTML report is one self-contained file. matplotlib is
imported when a figure is drawn, never at import time."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any


def png_bytes(draw: Callable[[Any], None], *, size: tuple[float, float] = (10, 3.2), dpi: int = 90) -> bytes:
    """Call ``draw(axes)`` on a fresh figure and return it as PNG."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, layout="constrained")
    draw(figure.subplots())
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def png_base64(draw: Callable[[Any], None], *, size: tuple[float, float] = (10, 3.2), dpi: int = 90) -> str:
    """The same PNG, base64-encoded for a ``data:`` URL."""
    return base64.b64encode(png_bytes(draw, size=size, dpi=dpi)).decode()
