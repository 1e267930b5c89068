"""Plots for the report: matplotlib (Agg, no display) figures embedded as base64 PNG ``<img>`` tags."""

from __future__ import annotations

import base64
import io
from typing import Any, Sequence

from .markup import esc

MAX_POINTS = 1500  # a step series longer than this is averaged into this many buckets


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only, never a window)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def figure(width: float = 6.0, height: float = 3.2, ncols: int = 1) -> tuple[Any, Any]:
    plt = pyplot()
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    for ax in axes[0]:
        ax.grid(True, alpha=0.3)
    return fig, list(axes[0]) if ncols > 1 else axes[0][0]


def img(fig: Any, alt: str) -> str:
    """The figure as an inline PNG ``<img>`` (the figure is closed)."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def png_file_img(data: bytes, alt: str) -> str:
    """A PNG file's bytes as an inline ``<img>``."""
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def downsample(x: Sequence[float], y: Sequence[float], n: int = MAX_POINTS) -> tuple[Any, Any]:
    """Bucket means of a long series (NaN-aware), so plotting a million steps stays fast."""
    import numpy as np

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(x) <= n:
        return x, y
    edges = np.linspace(0, len(x), n + 1).astype(int)
    with np.errstate(invalid="ignore"):
        xs = np.add.reduceat(x, edges[:-1]) / np.diff(edges)
        ok = ~np.isnan(y)
        sums = np.add.reduceat(np.where(ok, y, 0.0), edges[:-1])
        counts = np.add.reduceat(ok.astype(float), edges[:-1])
        ys = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return xs, ys
