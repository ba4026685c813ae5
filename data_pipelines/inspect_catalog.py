"""What `python -m data_pipelines.inspect` reads of a dataset: every image of every split
with its size, readability and labels, whatever the format (`Catalog`).

Sources are opened with `data_pipelines.sources.open_source`, so the catalog is the view
training gets (a dataset's `exclude` list applied) and format errors are the same one-line
`DataError`s. Each image file is opened once (in threads, with a progress bar).
"""
import dataclasses
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from data_pipelines.coco import CocoSource
from data_pipelines.decode import ImageInfo
from data_pipelines.sources import open_source
from data_pipelines.table_source import read_table
from data_pipelines.validate import probe_all
from effdet_tf.errors import DataError

SPLITS = ("train", "val", "test")
IMAGE_COLUMNS = ("split", "file", "path", "width", "height", "error", "label")
BOX_COLUMNS = ("image", "annotation_id", "category", "x", "y", "w", "h")


@dataclasses.dataclass
class Catalog:  # pylint: disable=too-many-instance-attributes  # one field per table
    """Every image of a dataset's splits, with what it is labelled.

    Attributes:
        name: dataset name.
        kind: "detection", "classification" or "multilabel".
        root: dataset folder.
        class_names: classes (detection, classification) or tags (multilabel).
        images: one row per image: `split`, `file` (below `root`, "/"-separated),
            `path`, `width` and `height` (0 when unreadable), `error` ("" when readable),
            `label` (classification: class index, -1 unknown; else -1).
        tags: float32 `[images, tags]` (multilabel): 1, 0 or NaN (unknown); else no column.
        boxes: detection: one row per annotation: `image` (row of `images`),
            `annotation_id`, `category` (class index, -1 for none), `x`, `y`, `w`, `h`
            (COCO pixels, NaN when the bbox is not 4 numbers).
        problems: format problems of the annotation files (text, one line each), as
            `(split, file, message)`.
        excluded: images already left out by the dataset's `exclude` list, per split.
    """

    name: str
    kind: str
    root: str
    class_names: List[str]
    images: pd.DataFrame
    tags: np.ndarray
    boxes: pd.DataFrame
    problems: List[tuple] = dataclasses.field(default_factory=list)
    excluded: Dict[str, int] = dataclasses.field(default_factory=dict)

    def split_rows(self, split: str) -> np.ndarray:
        """Row indices of one split's images."""
        return np.flatnonzero(self.images["split"].to_numpy() == split)


def split_present(dataset: Any, split: str) -> bool:
    """Whether a dataset config has a given split (its file, folder or table rows)."""
    if dataset.format == "coco":
        return os.path.isfile(dataset.paths(split)[0])
    if dataset.format == "image_folder":
        return os.path.isdir(os.path.join(dataset.root, split))
    if "{split}" in dataset.table:
        return os.path.isfile(dataset.table_path(split))
    table = read_table(dataset.table_path(split), [dataset.split_column])
    if dataset.split_column not in table.columns:
        return split == "train"  # the source names the missing column
    return bool((table[dataset.split_column].astype(str).str.strip() == split).any())


def _relative(path: str, root: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def _image_rows(split: str, paths: Sequence[str], root: str, infos: Sequence[ImageInfo],
                labels: Sequence[int]) -> pd.DataFrame:
    return pd.DataFrame({
        "split": split, "file": [_relative(p, root) for p in paths], "path": list(paths),
        "width": [i.width for i in infos], "height": [i.height for i in infos],
        "error": [i.error or "" for i in infos], "label": list(labels)},
        columns=list(IMAGE_COLUMNS))


def _bbox(ann: Dict[str, Any]) -> List[float]:
    bbox = ann.get("bbox")
    if isinstance(bbox, list) and len(bbox) == 4 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
        return [float(v) for v in bbox]
    return [float("nan")] * 4


def _coco_split(source: CocoSource, split: str, root: str, offset: int,
                names: List[str]) -> tuple:
    """`(images, boxes, problems)` of one COCO split; box rows index the whole catalog."""
    coco = source.coco
    entries = [coco.imgs[i] for i in source.image_ids]
    paths = [os.path.join(source.image_dir, e["file_name"]) for e in entries]
    infos = probe_all(paths, desc=f"{source.name} {split}")
    images = _image_rows(split, paths, root, infos, [-1] * len(paths))
    row_of = {image_id: offset + k for k, image_id in enumerate(source.image_ids)}
    class_of = {cid: names.index(name) for cid, name in zip(source.category_ids,
                                                             source.class_names)}
    boxes = []
    for ann in coco.dataset.get("annotations") or []:
        if not isinstance(ann, dict) or ann.get("image_id") not in row_of or ann.get("iscrowd"):
            continue
        boxes.append([row_of[ann["image_id"]], ann.get("id", -1),
                      class_of.get(ann.get("category_id"), -1)] + _bbox(ann))
    problems = [(split, _relative(source.annotation_file, root), str(p))
                for p in source.problems(check_images=False) if p.kind == "error"]
    return images, pd.DataFrame(boxes, columns=list(BOX_COLUMNS)), problems


def _label_split(source: Any, split: str, root: str, names: List[str]) -> tuple:
    """`(images, tags)` of one image-folder or table split, labels in `names` order."""
    infos = probe_all(source.paths, desc=f"{source.name} {split}")
    order = [names.index(n) for n in source.class_names]
    known = source.label_mask > 0
    if source.kind == "classification":
        labels = [order[int(np.argmax(row))] if known[k].any() else -1
                  for k, row in enumerate(source.labels)]
        return _image_rows(split, source.paths, root, infos, labels), None
    tags = np.full((source.num_images, len(names)), np.nan, np.float32)
    tags[:, order] = np.where(known, source.labels, np.nan)
    return _image_rows(split, source.paths, root, infos, [-1] * source.num_images), tags


def _class_names(sources: Sequence[Any]) -> List[str]:
    """The classes over all splits: the first split's order, then any new ones, sorted."""
    names: List[str] = []
    for source in sources:
        names += sorted(n for n in source.class_names if n not in names) if names else \
            list(source.class_names)
    return names


def build_catalog(dataset: Any, splits: Sequence[str] = SPLITS) -> Catalog:
    """Reads every image and label of a dataset config's splits.

    Args:
        dataset: an `effdet_tf.config.DatasetConfig`.
        splits: the splits to read; those the dataset lacks are left out (train must be
            there).

    Returns:
        The `Catalog`.

    Raises:
        DataError: the folder is missing, the training split is missing, or a split's
            files are malformed (one line naming file, row or key).
    """
    if not os.path.isdir(dataset.root):
        raise DataError(f"dataset '{dataset.name}': folder {dataset.root} does not exist")
    present = [s for s in splits if split_present(dataset, s)]
    if "train" in splits and "train" not in present:
        raise DataError(f"dataset '{dataset.name}': no train split in {dataset.root}")
    sources = {split: open_source(dataset, split) for split in present}
    names = _class_names(list(sources.values()))
    frames, tag_blocks, box_frames, problems, excluded = [], [], [], [], {}
    offset = 0
    for split, source in sources.items():
        excluded[split] = source.excluded
        if isinstance(source, CocoSource):
            images, boxes, found = _coco_split(source, split, dataset.root, offset, names)
            box_frames.append(boxes)
            problems += found
        else:
            images, tags = _label_split(source, split, dataset.root, names)
            if tags is not None:
                tag_blocks.append(tags)
        frames.append(images)
        offset += len(images)
    images = pd.concat(frames, ignore_index=True) if frames else \
        pd.DataFrame(columns=list(IMAGE_COLUMNS))
    boxes = pd.concat(box_frames, ignore_index=True) if box_frames else \
        pd.DataFrame(columns=list(BOX_COLUMNS))
    tags = np.concatenate(tag_blocks) if tag_blocks else np.zeros((len(images), 0), np.float32)
    return Catalog(dataset.name, dataset.label_kind, dataset.root, names, images, tags, boxes,
                   problems, excluded)


def class_name(catalog: Catalog, index: Optional[int]) -> str:
    """A class index as its name ("(none)" for -1 or None)."""
    return catalog.class_names[int(index)] if index is not None and index >= 0 else "(none)"


# `group` numbers the duplicate groups of a dataset (empty for other issues).
ISSUE_COLUMNS = ("dataset", "split", "file", "issue", "score", "detail", "exclude", "group")


def issue_row(catalog: Catalog, row: int, issue: str, score: float, detail: str,
              exclude: bool = False) -> Dict[str, Any]:
    """One row of `issues.csv` about image `row` of a catalog.

    Args:
        catalog: the dataset.
        row: the image's row in `catalog.images`.
        issue: the issue's name (`exact_duplicate`, `blurry`, `box_outside`, ...).
        score: how clean the image is on that count, 0 (worst) to 1 (clean).
        detail: one line a person reads.
        exclude: whether the stated rule puts the file in `exclude.txt`.

    Returns:
        The row, keyed by `ISSUE_COLUMNS`.
    """
    image = catalog.images.iloc[int(row)]
    return {"dataset": catalog.name, "split": image["split"], "file": image["file"],
            "issue": issue, "score": round(float(score), 4), "detail": detail,
            "exclude": bool(exclude)}
