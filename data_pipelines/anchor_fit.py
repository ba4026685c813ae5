"""How well a detection dataset's boxes fit the model's anchors, per class.

A box trains the anchors it overlaps at IoU >= 0.5 (the `iou` assigner,
`effdet_tf.targets`); one that overlaps none trains only its single best anchor, forced.
This measures, on the training boxes letterboxed to the model's input size as training
sees them (before augmentation), the share of boxes with no anchor at IoU >= 0.5, the
median best IoU and the median number of anchors at IoU >= 0.5: YOLOv5's "best possible
recall" check, per class. `python -m data_pipelines.inspect` prints it for the config's
anchors and for wider ones (`model.anchor_aspect_ratios`, docs/design.md).
"""
import os
from typing import Any, List, Optional, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from data_pipelines.decode import letterbox_geometry
from effdet_tf.anchors import ASPECT_RATIOS, generate_anchors
from effdet_tf.targets import pairwise_iou

POSITIVE_IOU = 0.5
# The wider set the report compares with: 4:1 and 1:4 besides EfficientDet's three.
WIDE_RATIOS = (1.0, 2.0, 0.5, 4.0, 0.25)
# A class with more of its boxes than this unmatched gets a hint in the report.
POOR_FIT_SHARE = 0.10


def letterboxed_boxes(catalog: Any, image_size: int, split: str = "train") -> pd.DataFrame:
    """The usable boxes of a split in the model's `S x S` letterboxed frame.

    Args:
        catalog: a detection `data_pipelines.inspect_catalog.Catalog`.
        image_size: the model's input side `S`.
        split: the split whose boxes are measured.

    Returns:
        Columns `category`, `x1`, `y1`, `x2`, `y2` (pixels of the letterboxed frame: the
        longer side scaled to `S`, centred: `data_pipelines.decode.letterbox_geometry`); boxes
        with a non-positive side or on unreadable images are left out.
    """
    boxes = catalog.boxes
    columns = ["category", "x1", "y1", "x2", "y2"]
    if catalog.kind != "detection" or boxes is None or boxes.empty:
        return pd.DataFrame(columns=columns)
    images = catalog.images
    image = boxes["image"].to_numpy(dtype=np.int64)
    xywh = boxes[["x", "y", "w", "h"]].to_numpy(dtype=np.float64)
    category = boxes["category"].to_numpy(dtype=np.int64)
    inside = (image >= 0) & (image < len(images))
    image = np.where(inside, image, 0)
    width = images["width"].to_numpy(dtype=np.float64)[image]
    height = images["height"].to_numpy(dtype=np.float64)[image]
    keep = (inside & (images["split"].astype(str).to_numpy()[image] == split)
            & np.isfinite(xywh).all(axis=1) & (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
            & (width > 0) & (height > 0) & (category >= 0)
            & (category < len(catalog.class_names)))
    hw = np.stack([np.maximum(height, 1.0), np.maximum(width, 1.0)])  # unreadable: kept out
    scale_xy, _, pad_xy = (t.numpy().astype(np.float64) for t in letterbox_geometry(
        tf.constant(hw.astype(np.int32)), image_size))                  # [2, N] each
    scale, pad_x, pad_y = scale_xy[0], pad_xy[0], pad_xy[1]
    x1 = xywh[:, 0] * scale + pad_x
    y1 = xywh[:, 1] * scale + pad_y
    frame = pd.DataFrame({"category": category, "x1": x1, "y1": y1,
                          "x2": x1 + xywh[:, 2] * scale, "y2": y1 + xywh[:, 3] * scale})
    return frame[keep].reset_index(drop=True)


def anchor_fit(catalog: Any, image_size: int,
               aspect_ratios: Sequence[float] = ASPECT_RATIOS,
               split: str = "train", chunk: int = 128) -> pd.DataFrame:
    """Per-class fit of the training boxes to the anchors of one set of aspect ratios.

    Args:
        catalog: a detection catalog.
        image_size: the model's input side.
        aspect_ratios: the anchors' width / height ratios (3 scales each).
        split: the split whose boxes are measured.
        chunk: boxes per IoU block (memory: `chunk x anchors` floats); the IoU is the
            anchor matching's own (`effdet_tf.targets.pairwise_iou`).

    Returns:
        Index = class names, then `all`; columns `boxes`, `median_aspect` (width /
        height), `no_anchor_share` (boxes whose best anchor IoU is under 0.5),
        `median_best_iou`, `median_anchors` (anchors at IoU >= 0.5 per box). NaN where a
        class has no box.
    """
    frame = letterboxed_boxes(catalog, image_size, split)
    anchors = generate_anchors(image_size, aspect_ratios=tuple(aspect_ratios))
    xyxy = frame[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float32)
    best = np.zeros(len(xyxy))
    count = np.zeros(len(xyxy))
    for start in range(0, len(xyxy), chunk):
        iou = np.asarray(pairwise_iou(anchors, xyxy[None, start:start + chunk]))[0].T
        best[start:start + chunk] = iou.max(axis=1)
        count[start:start + chunk] = (iou >= POSITIVE_IOU).sum(axis=1)
    category = frame["category"].to_numpy(dtype=np.int64)
    aspect = (xyxy[:, 2] - xyxy[:, 0]) / (xyxy[:, 3] - xyxy[:, 1])
    rows = []
    names = list(catalog.class_names)
    for index in list(range(len(names))) + [None]:
        mine = np.ones(len(category), bool) if index is None else category == index
        n = int(mine.sum())
        rows.append({"boxes": n,
                     "median_aspect": float(np.median(aspect[mine])) if n else np.nan,
                     "no_anchor_share": float((best[mine] < POSITIVE_IOU).mean()) if n
                     else np.nan,
                     "median_best_iou": float(np.median(best[mine])) if n else np.nan,
                     "median_anchors": float(np.median(count[mine])) if n else np.nan})
    return pd.DataFrame(rows, index=pd.Index(names + ["all"], name="class"))


def anchor_fit_lines(catalog: Any, image_size: int,
                     aspect_ratios: Sequence[float] = ASPECT_RATIOS,
                     fit: Optional[pd.DataFrame] = None) -> List[str]:
    """The report's line about anchor fit (detection datasets; none for other kinds).

    Args:
        catalog: the dataset catalog.
        image_size: the model's input side (`data.image_size`).
        aspect_ratios: the config's anchor ratios (`model.anchor_aspect_ratios`).
        fit: `anchor_fit(catalog, image_size, aspect_ratios)` when already computed.

    Returns:
        One or two markdown bullet lines, or none when there are no training boxes.
    """
    if catalog.kind != "detection":
        return []
    if fit is None:
        fit = anchor_fit(catalog, image_size, aspect_ratios)
    if not fit.loc["all", "boxes"]:
        return []
    classes = fit.drop(index="all").dropna()
    worst = classes["no_anchor_share"].idxmax()
    ratios = ", ".join(f"{r:g}" for r in aspect_ratios)
    line = (f"- Anchor fit (train boxes at {image_size} px, aspect ratios {ratios}): "
            f"{fit.loc['all', 'no_anchor_share']:.0%} of boxes have no anchor at IoU >= 0.5 "
            f"(worst `{worst}`: {classes.loc[worst, 'no_anchor_share']:.0%})")
    if classes.loc[worst, "no_anchor_share"] <= POOR_FIT_SHARE \
            or tuple(aspect_ratios) == WIDE_RATIOS:
        return [line]
    wide = anchor_fit(catalog, image_size, WIDE_RATIOS)
    wide_list = ", ".join(f"{r:g}" for r in WIDE_RATIOS)
    return [line, f"- With `model.anchor_aspect_ratios: [{wide_list}]`: "
                  f"{wide.loc['all', 'no_anchor_share']:.0%} of boxes, `{worst}` "
                  f"{wide.loc[worst, 'no_anchor_share']:.0%}; whether that raises AP depends "
                  "on the data (docs/design.md, anchor shapes)"]


def write_anchor_fit(catalog: Any, folder: str, image_size: int,
                     aspect_ratios: Sequence[float] = ASPECT_RATIOS) -> List[str]:
    """Writes `anchor_fit.csv` (the `anchor_fit` table) of a detection dataset into
    `folder` and returns the report's lines about it (none for other kinds).

    Args:
        catalog: the dataset catalog.
        folder: the dataset's output folder (made if missing).
        image_size: the model's input side.
        aspect_ratios: the config's anchor ratios.

    Returns:
        `anchor_fit_lines`.
    """
    if catalog.kind != "detection":
        return []
    fit = anchor_fit(catalog, image_size, aspect_ratios)
    lines = anchor_fit_lines(catalog, image_size, aspect_ratios, fit)
    if lines:
        os.makedirs(folder, exist_ok=True)
        fit.round(4).to_csv(os.path.join(folder, "anchor_fit.csv"))
    return lines
