"""What `train.predict` reads and the table it writes: images given as files, folders or a
table of ids, and `predictions.parquet` with one row per image.

Columns of `predictions.parquet`, in head order:

- `uuid` (the table's id, else the file stem; a relative path where stems repeat) and
  `file` (the image path);
- per classification head: `<head>_1`, `<head>_1_prob`, ..., `<head>_k`, `<head>_k_prob`
  (the k most likely classes, k = the head's `top_k`, 2 by default);
- per multilabel head: `<head>_<tag>` (0/1 at the head's saved threshold) and
  `<head>_<tag>_prob` for every tag;
- per detection head: `<head>_detections`, the number of boxes kept (the boxes are in
  `detections.json`).
"""
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from data_pipelines.image_labels import ImageResolver, is_image_file
from effdet_tf.errors import DataError

PREDICTIONS_FILE = "predictions.parquet"


def _folder_images(folder: str) -> List[str]:
    """Every image file below a folder (recursively), sorted."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, n) for n in sorted(names) if is_image_file(n)]
    return found


def _uuids(paths: Sequence[str], bases: Sequence[str]) -> List[str]:
    """File stems as ids; relative paths (less the extension) when stems repeat."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [os.path.splitext(os.path.relpath(p, b))[0].replace(os.sep, "/")
            for p, b in zip(paths, bases)]


def image_inputs(paths: Sequence[str]) -> List[Tuple[str, str]]:
    """`(uuid, path)` of every image named: image files, and the images below folders.

    Args:
        paths: image files and folders.

    Returns:
        One pair per image, in the order given (folders sorted).

    Raises:
        DataError: a path that does not exist, or a folder without images.
    """
    files, bases = [], []
    for path in paths:
        if os.path.isdir(path):
            found = _folder_images(path)
            if not found:
                raise DataError(f"{path}: no image file ({', '.join(('.jpg', '.png', '...'))}) "
                                "in the folder or below it")
            files += found
            bases += [path] * len(found)
        elif os.path.isfile(path):
            files.append(path)
            bases.append(os.path.dirname(path))
        else:
            raise DataError(f"{path}: no such image file or folder")
    return list(zip(_uuids(files, bases), files))


def table_inputs(table_file: str, image_dir: str, *, id_column: str,
                 split: Optional[str] = None, split_column: str = "split") -> List[Tuple[str, str]]:
    """`(uuid, path)` of every row of a table of image ids (CSV or parquet).

    Args:
        table_file: the table.
        image_dir: the folder its ids are relative to (a path or a stem, as in training).
        id_column: the id column.
        split: keep only the rows of this split (None: every row).
        split_column: the split column.

    Returns:
        One pair per row.

    Raises:
        DataError: the file, a column or the split is missing, or an id is empty
            (naming the file, row and column).
    """
    from data_pipelines.table_source import read_table  # pylint: disable=import-outside-toplevel  # pandas

    table = read_table(table_file, (id_column, split_column if split else None))
    for column in (id_column, split_column if split else None):
        if column and column not in table.columns:
            raise DataError(f"{table_file}: no column '{column}' (columns: "
                            f"{', '.join(map(str, table.columns))})")
    if split:
        table = table[table[split_column].astype(str) == split]
        if table.empty:
            raise DataError(f"{table_file}: no row with {split_column} == '{split}'")
    resolver = ImageResolver(image_dir)
    pairs = []
    for row, value in zip(table.index, table[id_column]):
        if value is None or (isinstance(value, float) and np.isnan(value)) or not str(value):
            raise DataError(f"{table_file}: row {row + 1}, column '{id_column}': empty id")
        pairs.append((str(value), resolver.path(str(value))))
    return pairs


def head_columns(kind: str, head: str, names: Sequence[str], out: Dict[str, Any],
                 index: int) -> Dict[str, Any]:
    """The `predictions.parquet` columns of one head for one image.

    Args:
        kind: the head kind.
        head: its name.
        names: its class names.
        out: the head's post-processed outputs for the batch (numpy).
        index: the image's row in the batch.

    Returns:
        `{column: value}` (see the module docstring).
    """
    if kind == "classification":
        row = {}
        for rank, (cls, score) in enumerate(zip(out["top_classes"][index],
                                                out["top_scores"][index]), start=1):
            row[f"{head}_{rank}"] = names[int(cls)]
            row[f"{head}_{rank}_prob"] = round(float(score), 5)
        return row
    if kind == "multilabel":
        row = {}
        for tag, flag, prob in zip(names, out["tags"][index], out["probabilities"][index]):
            row[f"{head}_{tag}"] = int(flag)
            row[f"{head}_{tag}_prob"] = round(float(prob), 5)
        return row
    return {f"{head}_detections": int(out["num_detections"][index])}


def label_lines(kinds: Dict[str, str], row: Dict[str, Any], names: Dict[str, Sequence[str]],
                max_tags: int = 8) -> List[str]:
    """One text line per image-level head for drawing: top classes or the tags found.

    Args:
        kinds: head -> kind.
        row: the image's `predictions.parquet` row.
        names: head -> class names.
        max_tags: tags shown at most (the most probable).

    Returns:
        e.g. `["category: t-shirt 0.81 | shirt 0.12", "tags: bag 0.93, shoes 0.88"]`.
    """
    lines = []
    for head, kind in kinds.items():
        if kind == "classification":
            ranks = sorted(k for k in row if k.startswith(f"{head}_") and k.endswith("_prob"))
            parts = [f"{row[k[:-5]]} {row[k]:.2f}" for k in ranks]
            lines.append(f"{head}: " + " | ".join(parts))
        elif kind == "multilabel":
            found = sorted(((row[f"{head}_{t}_prob"], t) for t in names[head]
                            if row[f"{head}_{t}"]), reverse=True)
            shown = ", ".join(f"{t} {p:.2f}" for p, t in found[:max_tags]) or "(none)"
            extra = f" (+{len(found) - max_tags})" if len(found) > max_tags else ""
            lines.append(f"{head}: {shown}{extra}")
    return lines


def write_predictions(rows: List[Dict[str, Any]], path: str) -> str:
    """Writes the rows as parquet through a temporary file (nothing half-written).

    Args:
        rows: one dict per image, the same keys each.
        path: the parquet file.

    Returns:
        The path.
    """
    import pandas as pd  # pylint: disable=import-outside-toplevel  # heavy, predict only

    tmp = f"{path}.tmp"
    pd.DataFrame(rows).to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path
