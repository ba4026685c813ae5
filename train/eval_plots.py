"""Evaluation plots written as PNG files: precision-recall curves and a confusion matrix.

Figures are drawn with matplotlib's object API on the Agg canvas, so no GUI backend is
needed and pyplot's global state is never touched.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _save(figure: Figure, path: str | os.PathLike) -> None:
    """Renders `figure` with the Agg canvas into the PNG `path`."""
    FigureCanvasAgg(figure)
    figure.savefig(os.fspath(path), dpi=110, format="png")


def plot_pr_curves(path: str | os.PathLike, recall: np.ndarray,
                   precisions: Mapping[str, np.ndarray], *, title: str = "",
                   ap: Mapping[str, float] | None = None) -> None:
    """Plots one precision-recall curve per class.

    Args:
        path: PNG file to write.
        recall: recall thresholds, `[R]` (COCO's 101 points).
        precisions: class name -> precision at each recall threshold, `[R]`; classes whose
            values are all negative (no ground truth) are listed as such, not drawn.
        title: figure title.
        ap: class name -> AP shown in the legend.
    """
    figure = Figure(figsize=(8.4, 5.0))
    axes = figure.add_subplot()
    drawn = []
    for name, precision in precisions.items():
        precision = np.asarray(precision, dtype=np.float64)
        if not np.any(precision >= 0):
            continue
        label = name if ap is None else f"{name} (AP {ap.get(name, -1.0):.3f})"
        axes.plot(recall, np.clip(precision, 0.0, None), label=label, linewidth=1.6)
        drawn.append(precision)
    if len(drawn) > 1:
        axes.plot(recall, np.mean(np.clip(drawn, 0.0, None), axis=0), color="black",
                  linestyle="--", linewidth=1.2, label="mean")
    missing = [name for name, p in precisions.items() if not np.any(np.asarray(p) >= 0)]
    if missing:
        figure.text(0.01, 0.01, "no ground truth: " + ", ".join(missing), fontsize=8)
    axes.set(xlim=(0.0, 1.0), ylim=(0.0, 1.02), xlabel="recall", ylabel="precision",
             title=title or "precision-recall")
    axes.grid(True, alpha=0.3)
    if drawn:  # beside the axes, never over a curve
        axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9, borderaxespad=0.0)
    figure.tight_layout()
    _save(figure, path)


def plot_confusion_matrix(path: str | os.PathLike, counts: np.ndarray,
                          labels: Sequence[str], *, title: str = "") -> None:
    """Plots a confusion matrix: colours are row-normalised, cells show count and row %.

    Args:
        path: PNG file to write.
        counts: `[K, K]` counts, rows = true label, columns = predicted label.
        labels: the K label names (the last one usually "background").
        title: figure title.
    """
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    side = 2.0 + 0.6 * len(labels)
    figure = Figure(figsize=(side + 1.2, side))
    axes = figure.add_subplot()
    image = axes.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of row")
    ticks = np.arange(len(labels))
    axes.set_xticks(ticks, labels=list(labels), rotation=45, ha="right")
    axes.set_yticks(ticks, labels=list(labels))
    axes.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            if counts[i, j] > 0:
                axes.text(j, i, f"{int(counts[i, j])}\n{rates[i, j]:.0%}", ha="center",
                          va="center", fontsize=8,
                          color="white" if rates[i, j] > 0.5 else "black")
    figure.tight_layout()
    _save(figure, path)
