"""Training plots: learning curves from the run's CSV log."""
import csv
import math
import os
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position  # after use("Agg")

_COMPONENT_STYLE = {"loss": ("-", 2.0), "cls_loss": (":", 1.3), "box_loss": ("-.", 1.3)}


def read_log(csv_path: str) -> Dict[str, List[float]]:
    """Reads Keras' CSVLogger file into columns of floats.

    Args:
        csv_path: the log file.

    Returns:
        Column name -> values, one per epoch.
    """
    columns: Dict[str, List[float]] = {}
    with open(csv_path, encoding="utf-8") as stream:
        for row in csv.DictReader(stream):
            for key, value in row.items():
                try:
                    columns.setdefault(key, []).append(float(value))
                except (TypeError, ValueError):
                    columns.setdefault(key, []).append(float("nan"))
    return columns


def head_names_in_log(cols: Dict[str, List[float]]) -> List[str]:
    """Heads with a `<head>_loss` column (other than the total), in log order.

    A column `<head>_<part>_loss` is a part of a head's loss (cls, box, ce, bce, ...),
    not a head: its name less `_<part>` is a head too.
    """
    names = [k[:-len("_loss")] for k in cols if k.endswith("_loss") and not k.startswith("val_")]
    return [n for n in names if "_" not in n or n.rsplit("_", 1)[0] not in names]


def _plot_pair(axes, epochs: List[int], cols: Dict[str, List[float]], key: str, label: str,
               colour: str, style: tuple) -> None:
    """Draws `key` (train, solid colour) and `val_key` (same colour, hollow markers)."""
    linestyle, width = style
    if key in cols:
        axes.plot(epochs, cols[key], linestyle, color=colour, linewidth=width,
                  label=f"train {label}")
    if f"val_{key}" in cols:
        axes.plot(epochs, cols[f"val_{key}"], linestyle, color=colour, linewidth=width,
                  alpha=0.55, marker="o", markerfacecolor="white", label=f"val {label}")


def plot_learning_curves(csv_path: str, png_path: str, title: str = "") -> str:
    """Plots the learning curves: total loss, one panel per head, and the learning rate.

    Train (solid) and validation (paler, hollow markers) share a panel; each head's panel
    shows its total loss and its classification and box parts. Legends sit under their
    panel, never over the curves.

    Args:
        csv_path: Keras CSVLogger output.
        png_path: where the PNG goes.
        title: figure title.

    Returns:
        `png_path`.
    """
    cols = read_log(csv_path)
    epochs = [int(e) + 1 for e in cols.get("epoch", [])]
    heads = head_names_in_log(cols)
    # The sum of the per-head means is the validation counterpart of the train loss. Logs
    # from train.fit hold it as val_loss already (train.callbacks.HeadSumValLoss); older
    # logs hold Keras' mean over single-dataset batches, so it is summed here for both.
    for prefix in ("", "val_"):
        if heads and all(f"{prefix}{h}_loss" in cols for h in heads):
            cols[f"{prefix}heads_sum"] = [sum(values) for values in
                                          zip(*(cols[f"{prefix}{h}_loss"] for h in heads))]
    panels = ["total"] + heads + ["learning rate"]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.4 * nrows), squeeze=False)
    flat = list(axes.ravel())
    _plot_pair(flat[0], epochs, cols, "heads_sum" if "val_heads_sum" in cols else "loss",
               "loss (sum over heads)", "black", _COMPONENT_STYLE["loss"])
    flat[0].set_title("total loss")
    for index, head in enumerate(heads):
        ax = flat[1 + index]
        for part, colour in (("loss", "C0"), ("cls_loss", "C1"), ("box_loss", "C2")):
            _plot_pair(ax, epochs, cols, f"{head}_{part}", part.replace("_", " "), colour,
                       _COMPONENT_STYLE[part])
        ax.set_title(f"head '{head}' (its own examples only)")
    for ax in flat[:1 + len(heads)]:
        ax.set_ylabel("loss")
        ax.set_ylim(bottom=0.0)
    lr_axes = flat[1 + len(heads)]
    if "learning_rate" in cols:
        lr_axes.plot(epochs, cols["learning_rate"], color="C3", marker=".")
        lr_axes.set_ylabel("learning rate (end of epoch)")
        lr_axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    else:
        lr_axes.text(0.5, 0.5, "no learning_rate column in the log", ha="center",
                     transform=lr_axes.transAxes)
    lr_axes.set_title("learning rate")
    for ax in flat[:len(panels)]:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if epochs:
            ax.set_xticks(epochs if len(epochs) <= 12 else ax.get_xticks())
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8,
                      frameon=False)
    for ax in flat[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title or os.path.basename(os.path.dirname(csv_path)))
    fig.text(0.99, 0.005, "val: inference mode, BN statistics re-estimated at the epoch's weights "
             "(train.refresh_bn_steps)", ha="right", va="bottom", fontsize=8,
             color="0.35")
    fig.tight_layout(rect=(0.0, 0.02, 1.0, 1.0))
    os.makedirs(os.path.dirname(png_path) or ".", exist_ok=True)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
