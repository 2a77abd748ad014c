"""Explanations as pictures: a heatmap over the image, tokens coloured by their attribution (an HTML
snippet), and a bar chart of global importance. Files are written atomically."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from modelcycle.bundle.files import write_bytes_atomic, write_text_atomic
from modelcycle.explain.attribution import Explanation
from modelcycle.explain.importance import Importance
from modelcycle.plots import png_bytes


def draw_heatmap(axes: Any, image: np.ndarray, explanation: Explanation) -> None:
    """The input image (channels averaged, grey) with the attribution map over it (red: towards the target,
    blue: against it)."""
    heat = np.asarray(explanation.attributions, dtype=np.float64)
    limit = float(np.abs(heat).max()) or 1.0
    axes.imshow(np.asarray(image, dtype=np.float64).mean(axis=0), cmap="gray")
    overlay = axes.imshow(heat, cmap="bwr", vmin=-limit, vmax=limit, alpha=0.55)
    axes.figure.colorbar(overlay, ax=axes, shrink=0.8)
    axes.set_title(f"{explanation.method}: towards '{explanation.target}'", fontsize=10)
    axes.axis("off")


def heatmap_png(image: np.ndarray, explanation: Explanation, path: Path) -> Path:
    return _write(
        path, png_bytes(lambda axes: draw_heatmap(axes, image, explanation), size=(4.2, 4), dpi=100)
    )


def tokens_html(explanation: Explanation) -> str:
    """A ``<p>`` of the tokens, each shaded by its attribution and carrying the value as a tooltip."""
    pairs = [(str(token), float(value)) for token, value in explanation.attributions]
    limit = max((abs(value) for _, value in pairs), default=0.0) or 1.0
    spans = []
    for token, value in pairs:
        strength = abs(value) / limit
        colour = f"rgba(220,40,40,{strength:.2f})" if value >= 0 else f"rgba(40,90,220,{strength:.2f})"
        spans.append(
            f'<span title="{value:+.4f}" style="background:{colour};padding:1px 2px;border-radius:3px">'
            f"{html.escape(token)}</span>"
        )
    caption = html.escape(
        f"{explanation.method} towards '{explanation.target}' (baseline: {explanation.baseline})"
    )
    tokens = f'<p class="explanation" data-method="{explanation.method}">{" ".join(spans)}</p>'
    return f"{tokens}\n<p><small>{caption}</small></p>\n"


def write_html(explanation: Explanation, path: Path) -> Path:
    write_text_atomic(
        path,
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(explanation.ref)}'
        f"</title></head><body>\n{tokens_html(explanation)}</body></html>\n",
    )
    return path


def draw_importance(axes: Any, importance: Importance, *, top_k: int = 10) -> None:
    """Horizontal bars of the ``top_k`` most important features, with their spread over the repeats."""
    shown = importance.features[:top_k][::-1]
    axes.barh(
        [item.feature for item in shown],
        [item.mean for item in shown],
        xerr=[item.std for item in shown],
        capsize=3,
    )
    axes.set_xlabel(f"drop in {importance.metric} when shuffled ({importance.repeats} repeats)")
    axes.set_title(f"{importance.ref}: permutation importance", fontsize=10)


def importance_size(importance: Importance, top_k: int = 10) -> tuple[float, float]:
    return (7.0, 0.4 * min(top_k, len(importance.features)) + 1.2)


def importance_png(importance: Importance, path: Path, *, top_k: int = 10) -> Path:
    draw = lambda axes: draw_importance(axes, importance, top_k=top_k)  # noqa: E731
    return _write(path, png_bytes(draw, size=importance_size(importance, top_k), dpi=100))


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)
    return path
