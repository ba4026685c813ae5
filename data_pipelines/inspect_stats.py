"""Numbers a dataset inspection reports about a catalog (no plotting): examples per class and
split, class imbalance, image sizes, boxes per image and box shapes (detection), tag
frequency and co-occurrence (multilabel), and the summary lines of the one-page report.

A catalog is any object with the attributes of `data_pipelines.inspect_catalog.Catalog`
(`name`, `kind`, `root`, `class_names`, `images`, `tags`, `boxes`); it is only read.

A box is counted ("usable") when its category is one of `class_names` and its x, y, w and h
are all finite; malformed boxes and boxes of other categories are left to the issue checks
and only reported by `uncounted`.
"""
import math
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")
ALL_IMAGES = "all images"
SIZE_COLUMNS = ("images", "unreadable", "median_width", "min_width", "max_width",
                "median_height", "min_height", "max_height", "median_aspect", "portrait",
                "landscape", "square")


def splits(catalog: Any) -> List[str]:
    """The splits that have images: train, val, test in that order, then any other name."""
    present = [str(s) for s in pd.unique(catalog.images["split"].astype(str))]
    return [s for s in SPLITS if s in present] + [s for s in present if s not in SPLITS]


def readable(catalog: Any) -> np.ndarray:
    """bool `[len(images)]`: the image opened (no error) and has a positive size."""
    images = catalog.images
    return ((images["error"].fillna("").astype(str) == "") & (images["width"] > 0)
            & (images["height"] > 0)).to_numpy(dtype=bool)


def _names(catalog: Any, limit: Optional[int] = None) -> List[str]:
    """The class (or tag) names as text, all or the first `limit`."""
    return [str(name) for name in list(catalog.class_names)[:limit]]


def _tag_values(catalog: Any) -> np.ndarray:
    """float64 `[len(images), T]`: the tag values (1, 0 or NaN); T = 0 unless multilabel."""
    tags = np.asarray(catalog.tags, dtype=np.float64)
    if catalog.kind != "multilabel" or tags.ndim != 2:
        return np.zeros((len(catalog.images), 0))
    return tags


def _positive_tags(catalog: Any) -> np.ndarray:
    """bool `[len(images), T]`: known positive tag values (NaN and 0 are False)."""
    return np.nan_to_num(_tag_values(catalog), nan=0.0) > 0.5


def _stat(function: Any, values: np.ndarray) -> float:
    """`function(values)` as a float, NaN for no values."""
    return float(function(values)) if values.size else math.nan


def _usable_boxes(catalog: Any) -> pd.DataFrame:
    """The rows of `catalog.boxes` that are counted (see the module docstring)."""
    boxes = catalog.boxes
    if catalog.kind != "detection" or boxes is None or len(boxes) == 0:
        return pd.DataFrame(columns=["image", "annotation_id", "category", "x", "y", "w", "h"])
    xywh = boxes[["x", "y", "w", "h"]].to_numpy(dtype=np.float64)
    category = boxes["category"].to_numpy(dtype=np.int64)
    image = boxes["image"].to_numpy(dtype=np.int64)
    keep = (np.isfinite(xywh).all(axis=1) & (category >= 0)
            & (category < len(catalog.class_names)) & (image >= 0)
            & (image < len(catalog.images)))
    return boxes[keep]


def box_measures(catalog: Any) -> pd.DataFrame:
    """One row per usable box: its image, category, split, relative size and aspect.

    Args:
        catalog: the dataset catalog (detection; other kinds give an empty table).

    Returns:
        Columns `image`, `category`, `split`, `rel_size` (sqrt(w*h / (W*H)), W x H the image
        size) and `aspect` (w / h); both NaN when the image is unreadable or w or h <= 0.
    """
    boxes = _usable_boxes(catalog)
    image = boxes["image"].to_numpy(dtype=np.int64)
    w = boxes["w"].to_numpy(dtype=np.float64)
    h = boxes["h"].to_numpy(dtype=np.float64)
    width = catalog.images["width"].to_numpy(dtype=np.float64)[image]
    height = catalog.images["height"].to_numpy(dtype=np.float64)[image]
    valid = readable(catalog)[image] & (w > 0) & (h > 0)
    area = np.where(valid, w * h, np.nan) / np.where(valid, width * height, 1.0)
    return pd.DataFrame({
        "image": image,
        "category": boxes["category"].to_numpy(dtype=np.int64),
        "split": catalog.images["split"].astype(str).to_numpy()[image],
        "rel_size": np.sqrt(area),
        "aspect": np.where(valid, w / np.where(valid, h, 1.0), np.nan),
    })


def split_counts(catalog: Any) -> pd.DataFrame:
    """Examples per class and split.

    Classification: images per class (images of unknown label only count in the last
    row); multilabel: images with a known positive value per tag; detection: usable boxes
    per class.

    Args:
        catalog: the dataset catalog.

    Returns:
        int64 table, index = class names then "all images" (images in the split), columns
        = `splits(catalog)` then "total".
    """
    names, columns = _names(catalog), splits(catalog)
    split_of = catalog.images["split"].astype(str).to_numpy()
    counts = np.zeros((len(names) + 1, len(columns)), dtype=np.int64)
    boxes = box_measures(catalog)
    for k, split in enumerate(columns):
        in_split = split_of == split
        counts[-1, k] = int(in_split.sum())
        if catalog.kind == "classification":
            label = catalog.images["label"].to_numpy(dtype=np.int64)[in_split]
            label = label[(label >= 0) & (label < len(names))]
            counts[:-1, k] = np.bincount(label, minlength=len(names))
        elif catalog.kind == "multilabel":
            counts[:-1, k] = _positive_tags(catalog)[in_split].sum(axis=0)[:len(names)]
        else:
            category = boxes["category"].to_numpy()[boxes["split"].to_numpy() == split]
            counts[:-1, k] = np.bincount(category, minlength=len(names))
    table = pd.DataFrame(counts, index=names + [ALL_IMAGES], columns=columns)
    table["total"] = counts.sum(axis=1)
    table.index.name = "tag" if catalog.kind == "multilabel" else "class"
    return table


def imbalance(catalog: Any) -> Dict[str, Any]:
    """The most and least frequent class of the train split (or the first split present).

    Args:
        catalog: the dataset catalog.

    Returns:
        `{"split": name, "most": (class, count), "least": (class, count), "ratio": most /
        least}`; ratio is inf when the least count is 0 (and the most is not), NaN when no
        class has an example; "most" and "least" are None without classes.
    """
    table = split_counts(catalog)
    split = (splits(catalog) or ["total"])[0]
    counts = table[split].to_numpy()[:-1]
    if counts.size == 0:
        return {"split": split, "most": None, "least": None, "ratio": math.nan}
    names, most, least = _names(catalog), int(np.argmax(counts)), int(np.argmin(counts))
    ratio = (counts[most] / counts[least] if counts[least] > 0
             else math.inf if counts[most] > 0 else math.nan)
    return {"split": split, "most": (names[most], int(counts[most])),
            "least": (names[least], int(counts[least])), "ratio": float(ratio)}


def size_summary(catalog: Any) -> pd.DataFrame:
    """Image sizes per split; widths, heights, aspect and shapes over readable images only.

    Args:
        catalog: the dataset catalog.

    Returns:
        Index = splits, columns `SIZE_COLUMNS`: images, unreadable, median/min/max width
        and height, median aspect (w / h), and the share of portrait (h > w), landscape
        (w > h) and square images (NaN when the split has no readable image).
    """
    images, ok, rows = catalog.images, readable(catalog), []
    split_of = images["split"].astype(str).to_numpy()
    for split in splits(catalog):
        w = images["width"].to_numpy(dtype=np.float64)[ok & (split_of == split)]
        h = images["height"].to_numpy(dtype=np.float64)[ok & (split_of == split)]
        rows.append([int((split_of == split).sum()), int((~ok & (split_of == split)).sum()),
                     _stat(np.median, w), _stat(np.min, w), _stat(np.max, w),
                     _stat(np.median, h), _stat(np.min, h), _stat(np.max, h),
                     _stat(np.median, w / np.maximum(h, 1.0)), _stat(np.mean, h > w),
                     _stat(np.mean, w > h), _stat(np.mean, w == h)])
    table = pd.DataFrame(rows, index=pd.Index(splits(catalog), name="split"),
                         columns=list(SIZE_COLUMNS))
    return table.astype({"images": np.int64, "unreadable": np.int64})


def boxes_per_image(catalog: Any) -> np.ndarray:
    """int64 `[readable images]`: usable boxes on each readable image, in row order (0 if none)."""
    counts = np.bincount(box_measures(catalog)["image"].to_numpy(dtype=np.int64),
                         minlength=len(catalog.images))
    return counts[readable(catalog)].astype(np.int64)


def box_shapes(catalog: Any) -> pd.DataFrame:
    """Box shapes per class (detection).

    Args:
        catalog: the dataset catalog.

    Returns:
        Index = class names; `boxes` (usable boxes, all splits), `median_rel_size` and
        `median_aspect` (over the boxes with a size, see `box_measures`; NaN when none).
    """
    grouped = box_measures(catalog).groupby("category")
    table = pd.DataFrame({"boxes": grouped.size(), "median_rel_size": grouped["rel_size"].median(),
                          "median_aspect": grouped["aspect"].median()})
    table = table.reindex(range(len(catalog.class_names))).astype(np.float64)
    table["boxes"] = table["boxes"].fillna(0).astype(np.int64)
    return table.set_axis(pd.Index(_names(catalog), name="class"))


def tag_frequency(catalog: Any) -> pd.DataFrame:
    """Known values and positives per tag over all splits (multilabel).

    Args:
        catalog: the dataset catalog.

    Returns:
        Index = tag names; `known` (images with a 0 or 1), `positives`, `prevalence`
        (positives / known, NaN when nothing is known) and `unknown_share` (share of all
        images whose value is unknown, NaN without images).
    """
    tags = _tag_values(catalog)
    known = (~np.isnan(tags)).sum(axis=0)
    positives = _positive_tags(catalog).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        prevalence = np.where(known > 0, positives / np.maximum(known, 1), np.nan)
    unknown = (tags.shape[0] - known) / tags.shape[0] if tags.shape[0] else known * np.nan
    return pd.DataFrame({"known": known.astype(np.int64), "positives": positives.astype(np.int64),
                         "prevalence": prevalence, "unknown_share": unknown},
                        index=pd.Index(_names(catalog, tags.shape[1]), name="tag"))


def cooccurrence(catalog: Any, normalize: bool = False) -> np.ndarray:
    """Images on which two tags are both known positive (multilabel).

    Args:
        catalog: the dataset catalog.
        normalize: return P(column tag | row tag) = C[r, c] / C[r, r] (0 where C[r, r] = 0)
            instead of the counts.

    Returns:
        `[T, T]`: int64 counts C (the diagonal holds each tag's positives), or the float64
        conditional shares.
    """
    positive = _positive_tags(catalog).astype(np.int64)
    counts = positive.T @ positive
    if not normalize:
        return counts
    diagonal = np.diag(counts).astype(np.float64)[:, None]
    return np.divide(counts, diagonal, out=np.zeros(counts.shape), where=diagonal > 0)


def uncounted(catalog: Any) -> Dict[str, int]:
    """What the class counts leave out, by reason, with only non-zero entries.

    Args:
        catalog: the dataset catalog.

    Returns:
        Detection: "malformed boxes" and "boxes of another category"; classification:
        "images without a known label"; multilabel: "images without a known tag".
    """
    found: Dict[str, int] = {}
    if catalog.kind == "detection" and len(catalog.boxes):
        finite = np.isfinite(catalog.boxes[["x", "y", "w", "h"]].to_numpy(np.float64)).all(1)
        found["malformed boxes"] = int((~finite).sum())
        found["boxes of another category"] = int(finite.sum()) - len(_usable_boxes(catalog))
    elif catalog.kind == "classification":
        label = catalog.images["label"].to_numpy(dtype=np.int64)
        found["images without a known label"] = int(
            ((label < 0) | (label >= len(catalog.class_names))).sum())
    elif catalog.kind == "multilabel":
        tags = _tag_values(catalog)
        found["images without a known tag"] = int(np.isnan(tags).all(axis=1).sum())
    return {key: count for key, count in found.items() if count > 0}


def _count(count: int, noun: str) -> str:
    """`count` and `noun` ("1 image", "3 images", "1 box")."""
    return f"{count:,} {noun if count != 1 else {'boxes': 'box'}.get(noun, noun[:-1])}"


def _share(part: float, whole: float) -> str:
    """`part` as a percentage of `whole` ("12.5%"), "n/a" when whole is 0."""
    return f"{100.0 * part / whole:.1f}%" if whole else "n/a"


def _imbalance_line(catalog: Any) -> str:
    """The summary line of the most and least frequent class (or tag)."""
    found = imbalance(catalog)
    what = "Tag" if catalog.kind == "multilabel" else "Class"
    noun = "boxes" if catalog.kind == "detection" else "images"
    if found["most"] is None or math.isnan(found["ratio"]):
        return f"- {what} imbalance: no {what.lower()} has an example"
    (most, high), (least, low) = found["most"], found["least"]
    ratio = "no example" if math.isinf(found["ratio"]) else f"ratio {found['ratio']:.1f}"
    return (f"- {what} imbalance ({found['split']}): most `{most}` ({_count(high, noun)}), "
            f"least `{least}` ({_count(low, noun)}; {ratio})")


def _kind_lines(catalog: Any) -> List[str]:
    """The summary lines only one kind of dataset has."""
    notes = uncounted(catalog)
    if catalog.kind == "detection":
        per_image = boxes_per_image(catalog)
        if not per_image.size:
            return ["- Boxes per image: no readable image"]
        lines = [f"- Images without boxes: {int((per_image == 0).sum()):,} of "
                 f"{per_image.size:,} readable ({_share((per_image == 0).sum(), per_image.size)})",
                 f"- Boxes per image: median {float(np.median(per_image)):g}, "
                 f"max {int(per_image.max()):,}"]
        if notes:
            lines.append("- Not counted: " + ", ".join(
                f"{key} ({count:,})" for key, count in notes.items()))
        return lines
    if catalog.kind == "multilabel":
        freq = tag_frequency(catalog).dropna(subset=["prevalence"])
        tags = _tag_values(catalog)
        unknown = (f"- Unknown tag values: {_share(np.isnan(tags).sum(), tags.size)} of all "
                   "image-tag values" + "".join(f"; {key}: {n:,}" for key, n in notes.items()))
        if freq.empty:
            return ["- Tag prevalence: no tag has a known value", unknown]
        high, low = freq["prevalence"].idxmax(), freq["prevalence"].idxmin()
        return [f"- Tag prevalence (all splits, of known values): highest `{high}` "
                f"({freq.loc[high, 'prevalence']:.1%}), lowest `{low}` "
                f"({freq.loc[low, 'prevalence']:.1%})", unknown]
    count = notes.get("images without a known label", 0)
    return [f"- Images without a known label: {count:,} ({_share(count, len(catalog.images))})"
            if count else "- Images without a known label: none"]


def summary_lines(catalog: Any) -> List[str]:
    """The markdown bullet lines a one-page report shows for the dataset (3 to 8).

    Args:
        catalog: the dataset catalog.

    Returns:
        Lines starting with "- ": images per split, unreadable images, median image size,
        class imbalance, then per kind: images without boxes and boxes per image
        (detection), tag prevalence and unknown share (multilabel), unknown labels
        (classification).
    """
    images, ok = catalog.images, readable(catalog)
    per_split = ", ".join(f"{split} {int((images['split'].astype(str) == split).sum()):,}"
                          for split in splits(catalog))
    lines = [f"- Images: {len(images):,}" + (f" ({per_split})" if per_split else "")]
    bad = int((~ok).sum())
    lines.append(f"- Unreadable images: {bad:,} ({_share(bad, len(images))})" if bad
                 else "- Unreadable images: none")
    if ok.any():
        w, h = images["width"].to_numpy()[ok], images["height"].to_numpy()[ok]
        lines.append(f"- Median image size: {float(np.median(w)):g} x {float(np.median(h)):g}"
                     f" px (w x h; widths {int(w.min()):,}-{int(w.max()):,}, heights "
                     f"{int(h.min()):,}-{int(h.max()):,})")
    else:
        lines.append("- Median image size: no readable image")
    lines.append(_imbalance_line(catalog))
    return lines + _kind_lines(catalog)
