"""Training plots: learning curves from the run's CSV log."""
import csv
import os
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position  # after use("Agg")


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


def plot_learning_curves(csv_path: str, png_path: str, title: str = "") -> str:
    """Plots total and per-head losses (train and val) and the learning rate per epoch.

    Args:
        csv_path: Keras CSVLogger output.
        png_path: where the PNG goes.
        title: figure title.

    Returns:
        `png_path`.
    """
    cols = read_log(csv_path)
    epochs = [int(e) + 1 for e in cols.get("epoch", [])]
    loss_keys = sorted(k for k in cols if k.endswith("loss") and not k.startswith("val_"))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for key in loss_keys:
        line, = axes[0].plot(epochs, cols[key], label=key)
        if f"val_{key}" in cols:
            axes[0].plot(epochs, cols[f"val_{key}"], "--", color=line.get_color(),
                         label=f"val_{key}")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    axes[0].grid(alpha=0.3)
    lr_key = "learning_rate" if "learning_rate" in cols else None
    if lr_key:
        axes[1].plot(epochs, cols[lr_key])
        axes[1].set_ylabel("learning rate (end of epoch)")
    axes[1].set_xlabel("epoch")
    axes[1].grid(alpha=0.3)
    fig.suptitle(title or os.path.basename(os.path.dirname(csv_path)))
    fig.tight_layout()
    os.makedirs(os.path.dirname(png_path) or ".", exist_ok=True)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
