"""Figures as PNG bytes or inline base64, so an HTML report is one self-contained file. matplotlib is
imported when a figure is drawn, never at import time."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(size: tuple[float, float] = (10, 3.2)) -> Figure:
    """An empty figure of ``size`` inches (constrained layout), not tied to pyplot's global state."""
    from matplotlib.figure import Figure

    return Figure(figsize=size, layout="constrained")


def figure_png(figure: Figure, *, dpi: int = 90) -> bytes:
    """``figure`` as PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def figure_base64(figure: Figure, *, dpi: int = 90) -> str:
    """``figure`` as PNG, base64-encoded for a ``data:`` URL."""
    return base64.b64encode(figure_png(figure, dpi=dpi)).decode()


def png_bytes(draw: Callable[[Any], None], *, size: tuple[float, float] = (10, 3.2), dpi: int = 90) -> bytes:
    """Call ``draw(axes)`` on a fresh figure and return it as PNG."""
    return figure_png(_drawn(draw, size), dpi=dpi)


def png_base64(draw: Callable[[Any], None], *, size: tuple[float, float] = (10, 3.2), dpi: int = 90) -> str:
    """The same PNG, base64-encoded for a ``data:`` URL."""
    return figure_base64(_drawn(draw, size), dpi=dpi)


def _drawn(draw: Callable[[Any], None], size: tuple[float, float]) -> Figure:
    figure = new_figure(size)
    draw(figure.subplots())
    return figure
