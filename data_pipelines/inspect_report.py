"""What `python -m data_pipelines.inspect` writes: `issues.csv`, one `exclude.txt` per
dataset, thumbnail sheets of the worst examples and of the likeliest wrong labels, and a
one-page `report.md` that links the analysis PNGs.
"""
import os
from typing import Any, Dict, List, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageOps

from data_pipelines.exclude import read_lines, write_exclude
from data_pipelines.inspect_catalog import ISSUE_COLUMNS, Catalog

EXCLUDE_FILE = "exclude.txt"
SHEET_COLUMNS = 6
PER_ISSUE = 3  # examples of each issue on the worst-examples sheet
SHEET_MAX = 24
NOISY_SHARE = 0.2  # above this share of flagged training images, the model is the suspect


def issues_frame(rows: Sequence[Dict[str, Any]]) -> pd.DataFrame:
    """The issue rows as `issues.csv`'s table, worst first within each issue."""
    frame = pd.DataFrame(list(rows), columns=list(ISSUE_COLUMNS))
    frame["group"] = frame["group"].astype("Int64")
    return frame.sort_values(["dataset", "issue", "score", "file"], kind="stable",
                             ignore_index=True)


def _thumbnail(path: str, side: int = 256) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
            img.thumbnail((side, side))
            return np.asarray(img)
    except (OSError, ValueError):
        return np.full((side, side, 3), 200, np.uint8)


def thumbnail_sheet(items: Sequence[Dict[str, str]], path: str, title: str) -> str:
    """A grid of thumbnails, each captioned (`{"path", "caption"}` per item).

    Args:
        items: images and their captions (two short lines at most read well).
        path: the PNG to write.
        title: the figure title.

    Returns:
        `path`.
    """
    items = list(items)[:SHEET_MAX]
    rows = max(1, -(-len(items) // SHEET_COLUMNS))
    columns = min(SHEET_COLUMNS, max(1, len(items)))
    fig = Figure(figsize=(2.6 * columns, 2.9 * rows + 0.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False)
    for axis in axes.ravel():
        axis.set_axis_off()
    for axis, item in zip(axes.ravel(), items):
        axis.imshow(_thumbnail(item["path"]))
        axis.set_title(item["caption"], fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    fig.clear()
    return path


def _short(text: str, width: int = 34) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]


def worst_examples(catalog: Catalog, issues: pd.DataFrame) -> List[Dict[str, str]]:
    """Up to `PER_ISSUE` images of each image-file issue of a dataset, worst first; for
    duplicates, the first groups whole (side by side, each marked kept or left out)."""
    paths = dict(zip(catalog.images["file"], catalog.images["path"]))
    items = []
    mine = issues[(issues["dataset"] == catalog.name) & issues["file"].isin(paths)
                  & ~issues["issue"].isin(["label_issue", "tag_issue"])]
    for issue, group in mine.groupby("issue", sort=True):
        group = group.drop_duplicates("file")
        if group["group"].notna().any():
            first = list(dict.fromkeys(group["group"]))[:2]
            group = group[group["group"].isin(first)].sort_values(["group", "split"])
            shown = group.head(2 * PER_ISSUE)
        else:
            shown = group.head(PER_ISSUE)
        for _, row in shown.iterrows():
            state = " left out" if row["exclude"] else ""
            items.append({"path": paths[row["file"]],
                          "caption": f"{issue} ({row['split']}){state}\n"
                                     f"{_short(row['file'])}"})
    return items


def label_examples(catalog: Catalog, rows: Sequence[Dict[str, Any]]) -> List[Dict[str, str]]:
    """Thumbnails of the likeliest wrong labels of a dataset, given vs suggested."""
    paths = dict(zip(catalog.images["file"], catalog.images["path"]))
    return [{"path": paths[r["file"]],
             "caption": f"given: {r['given']}\nmodel: {r['suggested']} "
                        f"(p given {r['score']:.2f})"}
            for r in rows if r["dataset"] == catalog.name and r["file"] in paths]


def write_dataset_exclude(catalog: Catalog, issues: pd.DataFrame, folder: str,
                          final: str, previous: str = "") -> str:
    """Writes a dataset's `exclude.txt`: its rows marked `exclude`, plus `previous`'s.

    Args:
        catalog: the dataset.
        issues: every issue row.
        folder: the folder to write it in now.
        final: the path it will have (named in its header).
        previous: the dataset's current exclusion file (its entries are kept), or "".

    Returns:
        The file written.
    """
    files = issues[(issues["dataset"] == catalog.name) & issues["exclude"]]["file"]
    paths = [os.path.join(catalog.root, f) for f in sorted(set(files))]
    if previous:
        paths += [os.path.join(catalog.root, entry) for _, entry in read_lines(previous)]
    target = os.path.join(folder, EXCLUDE_FILE)
    write_exclude(target, catalog.root, paths,
                  f"Images of dataset '{catalog.name}' to leave out (python -m "
                  "data_pipelines.inspect; rules in report.md).\nAdd to its config entry: "
                  f"exclude: {final}")
    return target


def issue_counts(catalog: Catalog, issues: pd.DataFrame) -> pd.DataFrame:
    """Per issue: images (distinct files) and how many of them `exclude.txt` leaves out."""
    mine = issues[issues["dataset"] == catalog.name]
    return mine.groupby("issue").agg(
        images=("file", "nunique"),
        left_out=("file", lambda f: mine.loc[f.index][mine.loc[f.index, "exclude"]]["file"]
                  .nunique())).reset_index()


def _markdown_table(frame: pd.DataFrame) -> List[str]:
    lines = ["| " + " | ".join(str(c) for c in frame.columns) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return lines


def dataset_section(catalog: Catalog, issues: pd.DataFrame, analysis: Dict[str, Any],
                    files: Dict[str, str], out_dir: str, final_exclude: str) -> List[str]:
    """The report's lines about one dataset.

    Args:
        catalog: the dataset.
        issues: every issue row.
        analysis: `inspect_plots.write_analysis` output (`pngs`, `lines`).
        files: `{"exclude", "examples", "labels"}` paths written for the dataset ("" if
            none).
        out_dir: the report's folder (links are relative to it).
        final_exclude: the path `exclude.txt` will have, for the config line.

    Returns:
        Markdown lines.
    """
    def rel(path: str) -> str:
        return os.path.relpath(path, out_dir).replace(os.sep, "/")

    lines = [f"## {catalog.name} ({catalog.kind}, {catalog.root})", ""]
    lines += list(analysis.get("lines", []))
    already = sum(catalog.excluded.values())
    if already:
        lines.append(f"- {already} images already left out by the config's exclude list")
    lines.append("")
    counts = issue_counts(catalog, issues)
    if len(counts):
        lines += _markdown_table(counts) + [""]
    else:
        lines += ["No issue found.", ""]
    lines += [f"![{os.path.splitext(os.path.basename(p))[0]}]({rel(p)})"
              for p in analysis.get("pngs", [])]
    for key, title in (("examples", "Worst examples"), ("labels", "Likeliest wrong labels")):
        if files.get(key):
            lines += ["", f"### {title}", "", f"![{key}]({rel(files[key])})"]
    mine = issues[(issues["dataset"] == catalog.name)
                  & issues["issue"].isin(["label_issue", "tag_issue"])]
    if len(mine):
        train = int((catalog.images["split"] == "train").sum())
        share = mine["file"].nunique() / max(train, 1)
        lines += ["", f"Likely wrong labels on {mine['file'].nunique():,} of {train:,} training "
                      f"images ({share:.0%}), {len(mine):,} labels in all; the 10 likeliest:"]
        if share > NOISY_SHARE:
            lines += ["", f"More than {NOISY_SHARE:.0%} of the training images disagree with "
                          "the model: this says more about the model than about the labels "
                          "(train it longer, or check a few by hand before excluding any)."]
        lines += [""] + _markdown_table(mine[["file", "issue", "score", "detail"]].head(10))
    count = len(read_lines(files["exclude"]))
    lines += ["", f"Leave out the {count} file{'' if count == 1 else 's'} of "
                  f"`{rel(files['exclude'])}` by adding to the dataset's config entry:", "",
              "```yaml", f"exclude: {final_exclude}", "```", ""]
    return lines
