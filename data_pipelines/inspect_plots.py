"""Figures of a dataset inspection written as PNG files (examples per class and split, image
sizes, boxes, tag co-occurrence), and `write_analysis`, which writes those that apply to a
catalog together with its CSV tables and summary lines.

Figures are drawn with matplotlib's object API on the Agg canvas (as in `train.eval_plots`):
no GUI backend is needed, pyplot's global state is never touched, and a figure is freed as
soon as it is saved. Their height grows with the number of classes, so about 40 class (or
tag) names stay readable.
"""
import os
from typing import Any, Dict, List, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.colors import LogNorm
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from data_pipelines import inspect_stats as stats

DPI = 110
SPLIT_COLOURS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}
OTHER_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
MARKERS = {"train": "o", "val": "s", "test": "^"}
NAME_CHARS = 32  # class names longer than this are cut in tick labels
SCATTER_LIMIT = 2000  # above this many distinct sizes, sizes are a 2-D histogram
ANNOTATE_TAGS = 15  # co-occurrence cells carry their value up to this many tags


def _save(figure: Figure, path: Any) -> str:
    """Renders `figure` into the PNG `path` with the Agg canvas, then frees it."""
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(os.fspath(path), dpi=DPI, format="png")
    figure.clear()
    return os.fspath(path)


def _colour(split: str, k: int) -> str:
    """The colour of a split in every figure."""
    return SPLIT_COLOURS.get(split, OTHER_COLOURS[k % len(OTHER_COLOURS)])


def _short(name: str) -> str:
    """A class name cut to `NAME_CHARS` characters for a tick label."""
    return name if len(name) <= NAME_CHARS else name[:NAME_CHARS - 1] + "\u2026"


def _empty(axes: Any, text: str) -> None:
    """Replaces a panel by a centred message (no data to draw)."""
    axes.set_axis_off()
    axes.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, color="0.35",
              transform=axes.transAxes)


def _images(count: int) -> str:
    """ "1 image", "12 images"."""
    return f"{count:,} image" + ("" if count == 1 else "s")


def _log_ticks(axis: Any, values: np.ndarray) -> None:
    """Plain labels (0.5, 1, 2) on a log axis; more ticks when `values` span little."""
    span = float(values.max() / values.min()) if values.size else 10.0
    subs = ((1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0) if span < 8 else
            (1.0, 2.0, 5.0) if span < 300 else (1.0,))
    axis.set_major_locator(LogLocator(subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _rows_height(rows: int, per_row: float, least: float) -> float:
    """The height in inches of a panel with one row per class."""
    return max(least, 1.2 + per_row * rows)


def plot_counts(catalog: Any, path: Any) -> str:
    """Horizontal grouped bars of `split_counts`: one bar per class and split.

    Args:
        catalog: the dataset catalog.
        path: PNG file to write.

    Returns:
        `path`, as a string.
    """
    table = stats.split_counts(catalog)
    names = [str(name) for name in catalog.class_names]
    columns = [column for column in table.columns if column != "total"]
    what = {"detection": ("boxes per class and split", "boxes"),
            "multilabel": ("images with each tag", "images with the tag (known positive)")}
    title, noun = what.get(catalog.kind, ("images per class and split", "images"))
    slot = 0.8 / max(len(columns), 1)
    figure = Figure(figsize=(10.0, _rows_height(len(names), 0.12 + 0.17 * len(columns), 3.5)))
    axes = figure.add_subplot()
    axes.set_title(f"{catalog.name}: {title}")
    if not names or not columns:
        _empty(axes, "no class" if not names else "no image")
        return _save(figure, path)
    rows = np.arange(len(names))
    for k, split in enumerate(columns):
        values = table[split].to_numpy()[:len(names)]
        bars = axes.barh(rows + (k - (len(columns) - 1) / 2) * slot, values, height=slot * 0.95,
                         color=_colour(split, k),
                         label=f"{split} ({_images(int(table.loc[stats.ALL_IMAGES, split]))})")
        axes.bar_label(bars, labels=[f"{v:,}" for v in values], padding=2,
                       fontsize=7 if len(columns) > 1 else 8)
    axes.set_yticks(rows, labels=[_short(name) for name in names])
    axes.set_ylim(len(names) - 0.5, -0.5)  # first class on top
    notes = stats.uncounted(catalog)
    axes.set_xlabel(noun + "".join(f"\nnot counted: {key} ({count:,})"
                                   for key, count in notes.items()))
    top = int(table[columns].to_numpy()[:-1].max())
    axes.set_xlim(0, max(1, top) * 1.12)  # room for the value labels
    if top == 0:
        axes.text(0.5, 0.5, f"no {noun.split()[0]} counted", ha="center", va="center",
                  fontsize=12, color="0.35", transform=axes.transAxes)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(True, axis="x", alpha=0.3)
    axes.legend(title="split", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    return _save(figure, path)


def _size_scatter(axes: Any, catalog: Any, ok: np.ndarray) -> None:
    """Width against height: one marker per distinct size and split, area ~ image count."""
    images = catalog.images
    for k, split in enumerate(stats.splits(catalog)):
        mine = images[ok & (images["split"].astype(str) == split).to_numpy()]
        if mine.empty:
            continue
        sizes = mine.groupby(["width", "height"]).size().reset_index(name="n")
        axes.scatter(sizes["width"], sizes["height"], s=18 + 140 * np.sqrt(sizes["n"]
                                                                          / sizes["n"].max()),
                     marker=MARKERS.get(split, "D"), facecolors="none", alpha=0.8,
                     edgecolors=_colour(split, k), label=f"{split} ({len(mine):,})")
    axes.legend(title="split (readable)", fontsize=8, loc="best")
    axes.set_title("width vs height (marker area ~ images of that size)")


def plot_sizes(catalog: Any, path: Any) -> str:
    """Two panels: width against height per split, and a histogram of the aspect ratio.

    Above `SCATTER_LIMIT` distinct sizes the first panel is a 2-D histogram (all splits).
    Without a readable image both panels say so.

    Args:
        catalog: the dataset catalog.
        path: PNG file to write.

    Returns:
        `path`, as a string.
    """
    images, ok = catalog.images, stats.readable(catalog)
    figure = Figure(figsize=(12.0, 5.0))
    left, right = figure.subplots(1, 2)
    figure.suptitle(f"{catalog.name}: image sizes ({int(ok.sum()):,} readable of "
                    f"{len(images):,} images)")
    if not ok.any():
        _empty(left, "no readable image")
        _empty(right, "no readable image")
        return _save(figure, path)
    width = images["width"].to_numpy(dtype=np.float64)
    height = images["height"].to_numpy(dtype=np.float64)
    if len(set(zip(width[ok], height[ok]))) > SCATTER_LIMIT:
        *_, mesh = left.hist2d(width[ok], height[ok], bins=50, cmin=1, cmap="viridis",
                               norm=LogNorm())
        figure.colorbar(mesh, ax=left, label="images (log)")
        left.set_title("width vs height, all splits")
    else:
        _size_scatter(left, catalog, ok)
    top = max(width[ok].max(), height[ok].max())
    left.plot([0, top], [0, top], color="0.5", linestyle="--", linewidth=1, label="_square")
    left.set(xlabel="width (px)", ylabel="height (px)", xlim=(0, top * 1.05),
             ylim=(0, top * 1.05))
    left.grid(True, alpha=0.3)
    aspect = width / np.where(ok, height, 1.0)
    low, high = aspect[ok].min() / 1.15, aspect[ok].max() * 1.15
    groups = [(k, split, aspect[ok & (images["split"].astype(str) == split).to_numpy()])
              for k, split in enumerate(stats.splits(catalog))]
    groups = [group for group in groups if group[2].size]
    right.hist([group[2] for group in groups], bins=np.geomspace(low, high, 31), stacked=True,
               color=[_colour(split, k) for k, split, _ in groups],
               label=[split for _, split, _ in groups])
    right.axvline(1.0, color="0.3", linestyle="--", linewidth=1)
    right.set_xscale("log")
    _log_ticks(right.xaxis, aspect[ok])
    right.yaxis.set_major_locator(MaxNLocator(integer=True))
    right.set(xlabel="aspect ratio w / h (log; < 1 portrait, > 1 landscape)", ylabel="images",
              title="aspect ratio (stacked by split)")
    right.legend(title="split", fontsize=8)
    right.grid(True, alpha=0.3)
    return _save(figure, path)


def _box_panel(axes: Any, values: Sequence[np.ndarray], column: str, label: str) -> None:
    """A horizontal box plot per class on a log axis (classes without values are skipped)."""
    rows = [c for c, v in enumerate(values) if v.size]
    if not rows:
        _empty(axes, "no box on a readable image")
        return
    axes.boxplot([values[c] for c in rows], positions=rows, orientation="horizontal",
                 widths=0.6, flierprops={"markersize": 2, "alpha": 0.4})
    axes.set_xscale("log")
    _log_ticks(axes.xaxis, np.concatenate([values[c] for c in rows]))
    axes.set(xlabel=label, title=column)
    axes.grid(True, axis="x", alpha=0.3)


def _per_image_panel(axes: Any, per_image: np.ndarray) -> None:
    """Histogram of boxes per readable image, one bar per count (labelled up to 30)."""
    if not per_image.size:
        _empty(axes, "no readable image")
        return
    most = int(per_image.max())
    edges = np.arange(-0.5, most + 1.5) if most <= 60 else np.linspace(-0.5, most + 0.5, 61)
    *_, bars = axes.hist(per_image, bins=edges, color=_colour("train", 0), edgecolor="white")
    if most <= 30:
        axes.bar_label(bars, labels=[f"{int(b.get_height()):,}" if b.get_height() else ""
                                     for b in bars], padding=2, fontsize=8)
        axes.set_xticks(range(most + 1))
    else:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlim(-0.5, max(most, 5) + 0.5)
    axes.margins(y=0.12)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set(xlabel="boxes per image", ylabel="images",
             title=f"boxes per image (readable images: {per_image.size:,}; without boxes: "
                   f"{int((per_image == 0).sum()):,})")
    axes.grid(True, axis="y", alpha=0.3)


def plot_boxes(catalog: Any, path: Any) -> str:
    """Three panels (detection): boxes per image, and per class box size and aspect.

    Args:
        catalog: the dataset catalog.
        path: PNG file to write.

    Returns:
        `path`, as a string.
    """
    names = [str(name) for name in catalog.class_names]
    panel = _rows_height(len(names), 0.3, 2.8)
    figure = Figure(figsize=(12.0, 3.6 + panel))
    grid = figure.add_gridspec(2, 2, height_ratios=[3.6, panel])
    top = figure.add_subplot(grid[0, :])
    figure.suptitle(f"{catalog.name}: boxes")
    _per_image_panel(top, stats.boxes_per_image(catalog))
    measures = stats.box_measures(catalog).dropna(subset=["rel_size"])
    by_class = [measures[measures["category"] == c] for c in range(len(names))]
    size_axes = figure.add_subplot(grid[1, 0])
    aspect_axes = figure.add_subplot(grid[1, 1], sharey=size_axes)
    _box_panel(size_axes, [m["rel_size"].to_numpy() for m in by_class],
               "box size relative to the image", "sqrt(box area / image area) (log)")
    _box_panel(aspect_axes, [m["aspect"].to_numpy() for m in by_class],
               "box aspect ratio", "w / h (log; < 1 tall, > 1 wide)")
    if measures.empty:
        return _save(figure, path)
    aspect_axes.axvline(1.0, color="0.5", linestyle="--", linewidth=1)
    size_axes.set_yticks(range(len(names)), labels=[f"{_short(name)} ({len(m):,})"
                                                    for name, m in zip(names, by_class)])
    size_axes.set_ylim(len(names) - 0.5, -0.5)
    aspect_axes.tick_params(labelleft=False)
    return _save(figure, path)


def plot_tags(catalog: Any, path: Any) -> str:
    """Heat map of tag co-occurrence (multilabel): cell = P(column tag | row tag).

    Args:
        catalog: the dataset catalog.
        path: PNG file to write.

    Returns:
        `path`, as a string.
    """
    names = [_short(str(name)) for name in catalog.class_names]
    counts = stats.cooccurrence(catalog)
    shares = stats.cooccurrence(catalog, normalize=True)
    side = max(6.0, 2.6 + 0.3 * len(names))
    figure = Figure(figsize=(side + 2.0, side + 0.6))
    axes = figure.add_subplot()
    figure.suptitle(f"{catalog.name}: tag co-occurrence")
    axes.set_title("cell = P(column tag | row tag): the share of the row tag's images\n"
                   "(known positive) that also have the column tag", fontsize=10)
    if not names or not np.diag(counts).any():
        _empty(axes, "no tag" if not names else "no known positive tag")
        return _save(figure, path)
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.03, label="P(column tag | row tag)")
    ticks = np.arange(len(names))
    font = 9 if len(names) <= 20 else 7
    axes.set_xticks(ticks, labels=names, rotation=45, ha="right", rotation_mode="anchor",
                    fontsize=font)
    axes.set_yticks(ticks, labels=[f"{name} ({int(counts[t, t]):,})"
                                   for t, name in enumerate(names)], fontsize=font)
    axes.set(xlabel="column tag", ylabel="row tag (images with it)")
    if len(names) <= ANNOTATE_TAGS:
        for r in range(len(names)):
            for c in range(len(names)):
                axes.text(c, r, f"{shares[r, c]:.2f}", ha="center", va="center", fontsize=8,
                          color="white" if shares[r, c] > 0.6 else "black")
    return _save(figure, path)


def write_analysis(catalog: Any, out_dir: Any) -> Dict[str, Any]:
    """Writes the figures and tables of a catalog into a folder.

    Args:
        catalog: the dataset catalog.
        out_dir: the folder (created if needed) that receives counts.png, sizes.png,
            boxes.png (detection) or tags.png (multilabel), counts.csv (`split_counts`) and
            sizes.csv (`size_summary`).

    Returns:
        `{"pngs": [PNG paths], "csvs": [CSV paths], "lines": summary_lines(catalog),
        "counts": split_counts(catalog), "imbalance": imbalance(catalog)}`.
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    pngs: List[str] = [plot_counts(catalog, os.path.join(out_dir, "counts.png")),
                       plot_sizes(catalog, os.path.join(out_dir, "sizes.png"))]
    if catalog.kind == "detection":
        pngs.append(plot_boxes(catalog, os.path.join(out_dir, "boxes.png")))
    elif catalog.kind == "multilabel":
        pngs.append(plot_tags(catalog, os.path.join(out_dir, "tags.png")))
    counts = stats.split_counts(catalog)
    csvs = [os.path.join(out_dir, "counts.csv"), os.path.join(out_dir, "sizes.csv")]
    counts.to_csv(csvs[0])
    stats.size_summary(catalog).to_csv(csvs[1])
    return {"pngs": pngs, "csvs": csvs, "lines": stats.summary_lines(catalog),
            "counts": counts, "imbalance": stats.imbalance(catalog)}
