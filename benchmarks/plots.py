"""Report plots: ROC curves, genuine/impostor score histograms, metrics over epochs.

matplotlib is imported inside each function (a device needs none of this) and drawn through
a bare ``Figure`` on the Agg canvas, so no global backend or pyplot state is touched.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edge.metrics import ScoreHistogram

logger = logging.getLogger(__name__)

DPI = 100


def _figure(size: tuple[float, float] = (6.0, 4.5)):
    """A pyplot-free figure with an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=DPI)
    logger.info("wrote %s", path)
    return path


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike,
             title: str = "ROC", far_min: float = 1e-6) -> Path:
    """Plot several ROC curves (e.g. U-U, U-M, M-M) on one log-FAR axis.

    Args:
        curves: ``{name: (far, tar)}``, e.g. the first two outputs of
            :func:`edge.metrics.roc_curve`.
        path: PNG to write.
        title: figure title.
        far_min: left end of the FAR axis (points at FAR 0 cannot sit on a log axis).

    Returns:
        The path written.

    Raises:
        ValueError: no curves, or a curve whose arrays differ in length.
    """
    if not curves:
        raise ValueError("plot_roc needs at least one curve")
    fig = _figure()
    ax = fig.add_subplot()
    for name, (far, tar) in curves.items():
        far, tar = np.asarray(far, dtype=float), np.asarray(tar, dtype=float)
        if far.shape != tar.shape:
            raise ValueError(f"curve {name!r}: far and tar differ in shape")
        keep = far > 0
        ax.step(far[keep], tar[keep], where="post", label=name)
    ax.set_xscale("log")
    ax.set_xlim(far_min, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def _density(scores, bins: np.ndarray) -> np.ndarray:
    """Histogram density of raw scores or of a :class:`ScoreHistogram`, on ``bins``."""
    if isinstance(scores, ScoreHistogram):
        # Re-bin the fine histogram by its bin centres: exact to within one fine bin.
        centres = scores.edges[:-1] + scores.width / 2
        counts, _ = np.histogram(centres, bins=bins, weights=scores.counts)
    else:
        counts, _ = np.histogram(np.asarray(scores), bins=bins)
    total = counts.sum()
    return counts / (total * np.diff(bins)) if total else counts.astype(float)


def plot_score_histograms(sets: Mapping[str, tuple[np.ndarray, object]],
                          path: str | os.PathLike, bins: int = 100,
                          score_range: tuple[float, float] = (-1.0, 1.0)) -> Path:
    """Plot genuine vs impostor score densities, one panel per set (U-U, U-M, M-M).

    Args:
        sets: ``{name: (genuine, impostor)}``; impostor may be a :class:`ScoreHistogram`.
        path: PNG to write.
        bins: number of bins over ``score_range``.
        score_range: score axis limits (cosine: -1..1).

    Returns:
        The path written.

    Raises:
        ValueError: no sets.
    """
    if not sets:
        raise ValueError("plot_score_histograms needs at least one set")
    edges = np.linspace(score_range[0], score_range[1], bins + 1)
    fig = _figure((4.0 * len(sets), 3.5))
    axes = fig.subplots(1, len(sets), squeeze=False)[0]
    for ax, (name, (genuine, impostor)) in zip(axes, sets.items()):
        ax.stairs(_density(impostor, edges), edges, fill=True, alpha=0.5, label="impostor")
        ax.stairs(_density(genuine, edges), edges, fill=True, alpha=0.5, label="genuine")
        ax.set_title(name)
        ax.set_xlabel("cosine similarity")
        ax.legend(loc="upper left")
    axes[0].set_ylabel("density")
    return _save(fig, path)


def plot_lines(series: Mapping[str, Sequence[float]], path: str | os.PathLike,
               x: Sequence[float] | None = None, xlabel: str = "epoch", ylabel: str = "",
               title: str = "") -> Path:
    """Plot named series against a shared x axis (e.g. metrics over epochs).

    Args:
        series: ``{name: values}``.
        path: PNG to write.
        x: x values; ``1..n`` when omitted.
        xlabel: x axis label.
        ylabel: y axis label.
        title: figure title.

    Returns:
        The path written.

    Raises:
        ValueError: no series, or a series whose length differs from ``x``.
    """
    if not series:
        raise ValueError("plot_lines needs at least one series")
    fig = _figure()
    ax = fig.add_subplot()
    for name, values in series.items():
        values = np.asarray(values, dtype=float)
        xs = np.arange(1, values.size + 1) if x is None else np.asarray(x, dtype=float)
        if xs.shape != values.shape:
            raise ValueError(f"series {name!r} has {values.size} values for {xs.size} x values")
        ax.plot(xs, values, marker="o", markersize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save(fig, path)
