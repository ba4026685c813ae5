"""Plots of image-level label heads, written as PNG files.

A confusion matrix (counts and row-normalised) and one-vs-rest precision-recall curves for
a softmax classification head; a grid of per-tag precision-recall curves with the
micro-averaged curve for a sigmoid multi-label head. Figures are drawn with matplotlib's
object API on the Agg canvas (as in `train.eval_plots`), so no GUI backend is needed and
pyplot's global state is never touched.
"""
from __future__ import annotations

import math
import os
from typing import Optional, Sequence, Tuple

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from train.label_metrics import average_precision, precision_recall_curve

DPI = 110
GRID_COLUMNS = 6
ANNOTATE_MAX_CLASSES = 25


def _save(figure: Figure, path: str) -> str:
    """Renders `figure` with the Agg canvas into the PNG `path` (folder created)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=DPI, format="png")
    return path


def _short(name: str, limit: int = 22) -> str:
    """`name`, cut with an ellipsis beyond `limit` characters."""
    return name if len(name) <= limit else name[:limit - 1] + "\u2026"


def _step_curve(scores: np.ndarray, positives: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """`(recall, precision)` drawn with `drawstyle="steps-pre"`: the area is the AP."""
    precision, recall, _ = precision_recall_curve(scores, positives)
    return np.r_[0.0, recall], np.r_[precision[:1], precision]


def _operating_point(scores: np.ndarray, positives: np.ndarray,
                     threshold: np.ndarray) -> Optional[Tuple[float, float]]:
    """`(recall, precision)` of `scores >= threshold`, None when nothing is predicted."""
    predicted = scores >= threshold
    if not predicted.any() or not positives.any():
        return None
    true_pos = float(np.sum(predicted & positives))
    return true_pos / float(positives.sum()), true_pos / float(predicted.sum())


def _pr_axes(axes, fontsize: float) -> None:
    """Unit square limits, light grid and small ticks of a precision-recall panel."""
    axes.set_xlim(0.0, 1.02)
    axes.set_ylim(0.0, 1.03)
    axes.set_xticks([0.0, 0.5, 1.0])
    axes.set_yticks([0.0, 0.5, 1.0])
    axes.tick_params(labelsize=fontsize)
    axes.grid(True, alpha=0.3)


def plot_confusion(confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: str,
                   title: str) -> str:
    """Plots a classification confusion matrix: counts and row-normalised, side by side.

    Cells are annotated (counts as ints, rates with 2 decimals) up to 25 classes; the
    figure and fonts scale with the number of classes.

    Args:
        confusion: `[C][C]` counts, row = true class, column = predicted class.
        class_names: the C class names.
        path: PNG file to write (its folder is created).
        title: figure title.

    Returns:
        `path`.
    """
    counts = np.asarray(confusion, dtype=np.float64)
    classes = len(class_names)
    if counts.shape != (classes, classes):
        raise ValueError(f"confusion {counts.shape} does not match {classes} class names")
    support = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, support, out=np.zeros_like(counts), where=support > 0)
    cell = min(0.6, max(0.3, 9.0 / max(classes, 1)))  # inches per cell
    fontsize = min(10.0, 5.0 + 10.0 * cell)  # 10 pt at 10 classes, 8 pt at 40
    labels = [_short(str(n), 18) for n in class_names]
    margin = 0.09 * max(len(n) for n in labels) * fontsize / 9.0 + 0.9
    side = classes * cell
    figure = Figure(figsize=(2 * (side + margin + 1.3), side + margin + 1.0),
                    layout="constrained")
    figure.suptitle(title, fontsize=15)
    ticks = np.arange(classes)
    annotate = classes <= ANNOTATE_MAX_CLASSES
    panels = ((counts, "counts", "Blues", max(counts.max(), 1.0), "{:.0f}"),
              (rates, "row-normalised (recall on diagonal)", "Greens", 1.0, "{:.2f}"))
    for column, (values, name, cmap, top, fmt) in enumerate(panels):
        axes = figure.add_subplot(1, 2, column + 1)
        image = axes.imshow(values, cmap=cmap, vmin=0.0, vmax=top)
        colourbar = figure.colorbar(image, ax=axes, fraction=0.046, pad=0.03, shrink=0.9)
        colourbar.ax.tick_params(labelsize=fontsize)
        axes.set_xticks(ticks, labels=labels, rotation=45 if classes <= 20 else 90,
                        ha="right" if classes <= 20 else "center", fontsize=fontsize,
                        rotation_mode="anchor" if classes <= 20 else "default")
        axes.set_yticks(ticks, labels=labels, fontsize=fontsize)
        axes.set_xlabel("predicted class", fontsize=12)
        axes.set_ylabel("true class", fontsize=12)
        axes.set_title(name, fontsize=13)
        if not annotate:
            continue
        for i in range(classes):
            for j in range(classes):
                if counts[i, j] == 0 and (i != j or support[i, 0] == 0):
                    continue  # blank: empty errors, and the rows of absent classes
                axes.text(j, i, fmt.format(values[i, j]), ha="center", va="center",
                          fontsize=0.9 * fontsize,
                          color="white" if values[i, j] > 0.55 * top else "black")
    return _save(figure, path)


def plot_pr_curves(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray,
                   tag_names: Sequence[str], thresholds: np.ndarray, path: str,
                   title: str) -> str:
    """Plots a multi-label head's precision-recall curves: micro-averaged, then per tag.

    Only known entries (`mask == 1`) count. A 2x2 panel at the top left holds the
    micro-averaged curve (all known entries pooled) with the pooled operating point; a
    grid of 6 columns then holds one small panel per tag with a known positive, titled
    with its AP and marked with the operating point of its threshold. Tags without a
    known positive are listed under the grid.

    Args:
        probs: `[N, T]` probabilities.
        labels: `[N, T]` truth, >= 0.5 = positive.
        mask: `[N, T]`, 1 where the label is known.
        tag_names: the T tag names.
        thresholds: `[T]` decision thresholds.
        path: PNG file to write (its folder is created).
        title: figure title.

    Returns:
        `path`.
    """
    probs = np.asarray(probs, dtype=np.float64)
    positives, known = np.asarray(labels) >= 0.5, np.asarray(mask) == 1
    if positives.shape != probs.shape or known.shape != probs.shape or probs.ndim != 2:
        raise ValueError("probs, labels and mask must all be [N, T]")
    if len(tag_names) != probs.shape[1]:
        raise ValueError(f"{len(tag_names)} tag names for {probs.shape[1]} columns")
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), probs.shape[1:])
    drawn = [t for t in range(probs.shape[1]) if np.any(positives[:, t] & known[:, t])]
    # Cells of a 6-column grid, skipping the 2x2 block of the micro panel.
    cells = []
    row = 0
    while len(cells) < len(drawn):
        cells.extend((row, c) for c in range(2 if row < 2 else 0, GRID_COLUMNS))
        row += 1
    rows = max(row, 2)
    figure = Figure(figsize=(2.25 * GRID_COLUMNS, 2.1 * rows + 0.9), layout="constrained")
    figure.suptitle(title, fontsize=15)
    grid = figure.add_gridspec(rows, GRID_COLUMNS)
    micro = figure.add_subplot(grid[0:2, 0:2])
    pooled_scores, pooled_truth = probs[known], positives[known]
    recall, precision = _step_curve(pooled_scores, pooled_truth)
    micro.plot(recall, precision, drawstyle="steps-pre", color="black", linewidth=1.8)
    point = _operating_point(pooled_scores, pooled_truth,
                             np.broadcast_to(thresholds, probs.shape)[known])
    if point is not None:
        micro.plot(*point, "o", color="tab:red", markersize=8, clip_on=False,
                   label="at thresholds")
        micro.legend(loc="lower left", fontsize=9)
    micro.set_title(f"micro-average AP={average_precision(pooled_scores, pooled_truth):.2f}",
                    fontsize=12, fontweight="bold")
    micro.set_xlabel("recall", fontsize=10)
    micro.set_ylabel("precision", fontsize=10)
    _pr_axes(micro, 9)
    for t, (row, column) in zip(drawn, cells):
        axes = figure.add_subplot(grid[row, column])
        scores, truth = probs[known[:, t], t], positives[known[:, t], t]
        recall, precision = _step_curve(scores, truth)
        axes.plot(recall, precision, drawstyle="steps-pre", color="tab:blue", linewidth=1.3)
        point = _operating_point(scores, truth, thresholds[t])
        if point is not None:
            axes.plot(*point, "o", color="tab:red", markersize=5, clip_on=False)
        axes.set_title(f"{_short(str(tag_names[t]))} AP={average_precision(scores, truth):.2f}",
                       fontsize=9)
        _pr_axes(axes, 7)
    skipped = [str(tag_names[t]) for t in range(probs.shape[1]) if t not in set(drawn)]
    if skipped:
        figure.supxlabel("no known positive: " + ", ".join(skipped), fontsize=9,
                         wrap=True)
    return _save(figure, path)


def plot_class_pr_curves(probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                         path: str, title: str) -> str:
    """Plots one-vs-rest precision-recall curves of a classification head, one per class.

    Classes without support are not drawn; they are listed under the axes.

    Args:
        probs: `[N, C]` class probabilities.
        labels: `[N]` true class indices.
        class_names: the C class names.
        path: PNG file to write (its folder is created).
        title: figure title.

    Returns:
        `path`.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if probs.ndim != 2 or probs.shape[0] != labels.size:
        raise ValueError(f"need probs [N, C] with N = len(labels), got {probs.shape}")
    if len(class_names) != probs.shape[1]:
        raise ValueError(f"{len(class_names)} class names for {probs.shape[1]} columns")
    present = [c for c in range(probs.shape[1]) if np.any(labels == c)]
    legend_columns = max(1, math.ceil(len(present) / 22))
    figure = Figure(figsize=(7.5 + 2.4 * legend_columns, 6.0), layout="constrained")
    axes = figure.add_subplot()
    cmap = colormaps["tab10" if len(present) <= 10 else "tab20"]
    styles = ("-", "--", ":")
    for rank, c in enumerate(present):
        recall, precision = _step_curve(probs[:, c], labels == c)
        ap = average_precision(probs[:, c], labels == c)
        axes.plot(recall, precision, drawstyle="steps-pre", linewidth=1.5,
                  color=cmap(rank % cmap.N), linestyle=styles[(rank // cmap.N) % 3],
                  label=f"{_short(str(class_names[c]))} (AP {ap:.2f})")
    _pr_axes(axes, 10)
    axes.set_xticks(np.linspace(0.0, 1.0, 6))
    axes.set_yticks(np.linspace(0.0, 1.0, 6))
    axes.set_xlabel("recall", fontsize=11)
    axes.set_ylabel("precision", fontsize=11)
    axes.set_title(title, fontsize=13)
    if present:  # beside the axes, never over a curve
        axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9,
                    ncol=legend_columns, borderaxespad=0.0)
    absent = [str(class_names[c]) for c in range(probs.shape[1]) if c not in set(present)]
    if absent:
        figure.supxlabel("no support: " + ", ".join(absent), fontsize=9, wrap=True)
    return _save(figure, path)
