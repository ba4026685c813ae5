"""Box issues of a detection dataset: boxes outside their image, degenerate and tiny boxes,
near-identical duplicate boxes, images without boxes, and annotation-file errors.

Exclusion rule (`exclude` of each row): an image with a box wholly outside it, or with a
malformed or zero-size box, is left out (training refuses such a file, or would learn the
object as background). Boxes mostly outside (clipped when read), tiny boxes, duplicate
boxes and images without boxes are reported and kept.
"""
from typing import Any, Dict, List

import numpy as np

from data_pipelines.inspect_catalog import Catalog, class_name, issue_row

MOSTLY_OUTSIDE = 0.5  # share of a box's area outside its image
DUPLICATE_IOU = 0.9
TINY_SIDE = 2.0  # pixels, at the model's input size


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each of `others` (xyxy)."""
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[2], others[:, 2])
    y1 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def _box_rows(catalog: Catalog, image_size: int) -> List[Dict[str, Any]]:
    """Rows about single boxes: malformed, degenerate, outside, mostly outside, tiny."""
    rows = []
    images = catalog.images
    for box in catalog.boxes.itertuples(index=False):
        row = int(box.image)
        width, height = images.at[row, "width"], images.at[row, "height"]
        name = class_name(catalog, int(box.category))
        where = f"annotation id {box.annotation_id} ({name})"
        values = np.array([box.x, box.y, box.w, box.h], float)
        if np.isnan(values).any():
            rows.append(issue_row(catalog, row, "degenerate_box", 0.0,
                                  f"{where}: bbox is not 4 numbers [x, y, w, h]", exclude=True))
            continue
        x, y, w, h = values
        if w <= 0 or h <= 0:
            rows.append(issue_row(catalog, row, "degenerate_box", 0.0,
                                  f"{where}: bbox {values.tolist()} has zero or negative size",
                                  exclude=True))
            continue
        if not width or not height:
            continue  # an unreadable image: reported by the image checks
        inside = max(0.0, min(x + w, width) - max(x, 0.0)) * \
            max(0.0, min(y + h, height) - max(y, 0.0)) / (w * h)
        if inside == 0:
            rows.append(issue_row(catalog, row, "box_outside", 0.0,
                                  f"{where}: bbox {values.tolist()} lies wholly outside the "
                                  f"{width}x{height} image", exclude=True))
        elif inside < 1 - MOSTLY_OUTSIDE:
            rows.append(issue_row(catalog, row, "box_mostly_outside", inside,
                                  f"{where}: {1 - inside:.0%} of bbox {values.tolist()} lies "
                                  f"outside the {width}x{height} image (clipped)"))
        scale = image_size / max(width, height)
        if min(w, h) * scale < TINY_SIDE:
            rows.append(issue_row(catalog, row, "tiny_box", min(w, h) * scale / TINY_SIDE,
                                  f"{where}: {w:g}x{h:g} px, under {TINY_SIDE:g} px a side at "
                                  f"the {image_size} px input"))
    return rows


def _duplicate_rows(catalog: Catalog) -> List[Dict[str, Any]]:
    """Rows about pairs of same-class boxes of one image with IoU over `DUPLICATE_IOU`."""
    rows = []
    boxes = catalog.boxes.dropna(subset=["x", "y", "w", "h"])
    boxes = boxes[(boxes["w"] > 0) & (boxes["h"] > 0)]
    for (row, category), group in boxes.groupby(["image", "category"]):
        if len(group) < 2:
            continue
        xyxy = group[["x", "y", "w", "h"]].to_numpy(float, copy=True)
        xyxy[:, 2:] += xyxy[:, :2]
        ids = group["annotation_id"].tolist()
        for i in range(len(group) - 1):
            ious = _iou(xyxy[i], xyxy[i + 1:])
            for j in np.flatnonzero(ious > DUPLICATE_IOU):
                rows.append(issue_row(
                    catalog, row, "duplicate_box", 1 - float(ious[j]),
                    f"annotation ids {ids[i]} and {ids[i + 1 + j]} "
                    f"({class_name(catalog, int(category))}) overlap at IoU "
                    f"{float(ious[j]):.2f}"))
    return rows


def find_box_issues(catalog: Catalog, image_size: int = 512) -> List[Dict[str, Any]]:
    """Every box issue of a detection dataset, by the module's rule.

    Args:
        catalog: a detection dataset (`data_pipelines.inspect_catalog.build_catalog`).
        image_size: the model's input size, for the tiny-box rule.

    Returns:
        Rows keyed by `inspect_catalog.ISSUE_COLUMNS` (none for other kinds).
    """
    if catalog.kind != "detection":
        return []
    rows = _box_rows(catalog, image_size) + _duplicate_rows(catalog)
    with_boxes = set(catalog.boxes["image"].astype(int).tolist())
    readable = catalog.images["error"].to_numpy() == ""
    for row in np.flatnonzero(readable):
        if int(row) not in with_boxes:
            rows.append(issue_row(catalog, row, "no_boxes", 1.0,
                                  "no box: trains as background only"))
    for split, file, message in catalog.problems:
        rows.append({"dataset": catalog.name, "split": split, "file": file,
                     "issue": "annotation_error", "score": 0.0, "detail": message,
                     "exclude": False})
    return rows
