"""COCO bounding-box evaluation of detections against a pycocotools ground truth.

`evaluate_detections` runs pycocotools' COCOeval over every ground-truth image (an image
without any detection counts as all misses), adds per-class AP and a confusion matrix,
and optionally writes `<prefix>pr_curve.png`, `<prefix>confusion_matrix.png` and
`<prefix>metrics.json`. pycocotools' console output is captured; its standard 12-line
summary is returned as the string `"summary"`.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pathlib
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from effdet_tf.errors import DataError
from train import eval_plots

# Names of COCOeval.stats, in its order.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
CONFUSION_SCORE_THRESHOLD = 0.25
CONFUSION_IOU_THRESHOLD = 0.5
BACKGROUND = "background"


def coco_from_dict(dataset: Mapping[str, Any]) -> COCO:
    """Builds a pycocotools COCO from an in-memory COCO dict, without console output.

    Args:
        dataset: dict with `images`, `annotations` and `categories`.

    Returns:
        The indexed COCO object.
    """
    coco = COCO()
    coco.dataset = dict(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _number(value: Any, what: str) -> float:
    """`value` as a finite float, else DataError naming `what`."""
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise DataError(f"{what} is not a number: {value!r}") from err
    if not math.isfinite(number):
        raise DataError(f"{what} is not finite: {value!r}")
    return number


def _clean_detections(coco_gt: COCO, detections: Iterable[Mapping[str, Any]],
                      category_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Checks the detections and returns them as COCO result annotations (with ids)."""
    image_ids = set(coco_gt.getImgIds())
    known_categories = set(category_ids)
    annotations = []
    for index, det in enumerate(detections):
        what = f"detection {index}"
        try:
            image_id, category_id, bbox, score = (det["image_id"], det["category_id"],
                                                  det["bbox"], det["score"])
        except (KeyError, TypeError) as err:
            raise DataError(f"{what} lacks image_id, category_id, bbox or score: {det!r}") from err
        if image_id not in image_ids:
            raise DataError(f"{what}: image_id {image_id!r} is not in the ground truth")
        if category_id not in known_categories:
            raise DataError(f"{what}: category_id {category_id!r} is not one of {category_ids}")
        if len(bbox) != 4:
            raise DataError(f"{what}: bbox must be [x, y, w, h], got {bbox!r}")
        x, y, w, h = (_number(v, f"{what} bbox") for v in bbox)
        if w < 0 or h < 0:
            raise DataError(f"{what}: bbox has a negative width or height: {bbox!r}")
        annotations.append({"id": index + 1, "image_id": int(image_id),
                            "category_id": int(category_id), "bbox": [x, y, w, h],
                            "score": _number(score, f"{what} score"), "area": w * h,
                            "iscrowd": 0})
    return annotations


def _results_coco(coco_gt: COCO, annotations: list[dict[str, Any]]) -> COCO:
    """The detections as a COCO object over the ground truth's images (empty list allowed).

    Built directly rather than with `COCO.loadRes`, which fails on an empty list.
    """
    return coco_from_dict({"images": list(coco_gt.imgs.values()),
                           "categories": list(coco_gt.cats.values()),
                           "annotations": annotations})


def _xyxy(boxes: Sequence[Sequence[float]]) -> np.ndarray:
    """`[N, 4]` xywh boxes to xyxy (an empty input gives `[0, 4]`)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def _iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes, `[N, 4]` x `[M, 4]` -> `[N, M]`."""
    top_left = np.maximum(first[:, None, :2], second[None, :, :2])
    bottom_right = np.minimum(first[:, None, 2:], second[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0.0, None), axis=2)
    area_first = np.prod(first[:, 2:] - first[:, :2], axis=1)
    area_second = np.prod(second[:, 2:] - second[:, :2], axis=1)
    union = area_first[:, None] + area_second[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _match_image(counts: np.ndarray, gt_boxes: np.ndarray, gt_classes: np.ndarray,
                 dets: list[tuple[float, int, list[float]]], iou_threshold: float) -> None:
    """Adds one image's greedy matches to `counts` (in place); background is the last row."""
    background = counts.shape[0] - 1
    dets = sorted(dets, key=lambda d: -d[0])
    ious = _iou(_xyxy([d[2] for d in dets]), gt_boxes)
    matched = np.zeros(len(gt_boxes), dtype=bool)
    for row, (_, det_class, _) in enumerate(dets):
        candidates = (ious[row] >= iou_threshold) & ~matched
        same = candidates & (gt_classes == det_class)
        pool = same if same.any() else candidates
        if not pool.any():
            counts[background, det_class] += 1
            continue
        best = int(np.argmax(np.where(pool, ious[row], -1.0)))
        matched[best] = True
        counts[gt_classes[best], det_class] += 1
    for gt_class in gt_classes[~matched]:
        counts[gt_class, background] += 1


def confusion_matrix(coco_gt: COCO, detections: Iterable[Mapping[str, Any]], *,
                     category_ids: Sequence[int],
                     score_threshold: float = CONFUSION_SCORE_THRESHOLD,
                     iou_threshold: float = CONFUSION_IOU_THRESHOLD) -> np.ndarray:
    """Counts detections against ground truth per image, classes plus background.

    Detections with `score >= score_threshold` are taken by descending score; each is
    matched to the unmatched ground-truth box of highest IoU (>= `iou_threshold`),
    preferring a box of its own class. An unmatched detection counts as
    (true background, predicted class); an unmatched ground-truth box as
    (true class, predicted background). Crowd boxes and other categories are ignored.

    Args:
        coco_gt: ground truth.
        detections: dicts with image_id, category_id, bbox `[x, y, w, h]`, score.
        category_ids: the COCO category id of each class, in class order.
        score_threshold: lowest score of a counted detection.
        iou_threshold: lowest IoU of a match.

    Returns:
        int64 `[C + 1, C + 1]` counts, rows = true class, columns = predicted class; index
        C is background.
    """
    index_of = {int(cid): i for i, cid in enumerate(category_ids)}
    counts = np.zeros((len(index_of) + 1, len(index_of) + 1), dtype=np.int64)
    per_image: dict[int, list[tuple[float, int, list[float]]]] = {}
    for det in detections:
        if float(det["score"]) >= score_threshold and int(det["category_id"]) in index_of:
            per_image.setdefault(int(det["image_id"]), []).append(
                (float(det["score"]), index_of[int(det["category_id"])], list(det["bbox"])))
    for image_id in coco_gt.getImgIds():
        gts = [a for a in coco_gt.imgToAnns.get(image_id, [])
               if not a.get("iscrowd", 0) and int(a["category_id"]) in index_of]
        _match_image(counts, _xyxy([a["bbox"] for a in gts]),
                     np.asarray([index_of[int(a["category_id"])] for a in gts], dtype=np.int64),
                     per_image.get(image_id, []), iou_threshold)
    return counts


def _run_cocoeval(coco_gt: COCO, coco_dt: COCO,
                  category_ids: Sequence[int]) -> tuple[COCOeval, str]:
    """Runs evaluate/accumulate/summarize quietly; returns the evaluator and the summary."""
    evaluator = COCOeval(coco_gt, coco_dt, "bbox")
    evaluator.params.imgIds = sorted(coco_gt.getImgIds())
    evaluator.params.catIds = sorted({int(c) for c in category_ids})
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.summarize()
    return evaluator, summary.getvalue().rstrip("\n")


def _mean_valid(values: np.ndarray) -> float:
    """Mean of the entries > -1 (COCO's convention), or -1 when there are none."""
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _write_outputs(out_dir: str | os.PathLike, prefix: str, result: dict[str, Any],
                   evaluator: COCOeval, class_names: Sequence[str],
                   category_ids: Sequence[int]) -> dict[str, str]:
    """Writes the PR-curve and confusion-matrix PNGs and the metrics JSON."""
    folder = pathlib.Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    files = {key: str(folder / f"{prefix}{key}{ext}") for key, ext in
             (("pr_curve", ".png"), ("confusion_matrix", ".png"), ("metrics", ".json"))}
    order = evaluator.params.catIds
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]
    curves = {name: precision[0, :, order.index(int(cid)), 0, -1]
              for name, cid in zip(class_names, category_ids)}
    title = f"{prefix.rstrip('_')} " if prefix else ""
    eval_plots.plot_pr_curves(files["pr_curve"], evaluator.params.recThrs, curves,
                              title=f"{title}precision-recall at IoU 0.5",
                              ap=result["per_class_AP50"])
    matrix = result["confusion_matrix"]
    eval_plots.plot_confusion_matrix(
        files["confusion_matrix"], np.asarray(matrix["counts"]), matrix["labels"],
        title=(f"{title}confusion (score >= {matrix['score_threshold']}, "
               f"IoU >= {matrix['iou_threshold']})"))
    pathlib.Path(files["metrics"]).write_text(
        json.dumps({**result, "files": files}, indent=2) + "\n", encoding="utf-8")
    return files


def evaluate_detections(coco_gt: COCO, detections: Iterable[Mapping[str, Any]], *,
                        class_names: Sequence[str], category_ids: Sequence[int],
                        out_dir: Optional[str | os.PathLike] = None,
                        prefix: str = "") -> dict[str, Any]:
    """Evaluates detections with COCO's bbox metrics over every ground-truth image.

    Args:
        coco_gt: ground truth (pycocotools COCO).
        detections: dicts `{image_id, category_id, bbox [x, y, w, h] in original image
            pixels, score}`; may be empty (every metric is then 0 where defined).
        class_names: name of each class.
        category_ids: COCO category id of each class, same order as `class_names`.
        out_dir: folder for `<prefix>pr_curve.png`, `<prefix>confusion_matrix.png` and
            `<prefix>metrics.json`; nothing is written when None.
        prefix: file-name prefix, e.g. `"val_"`.

    Returns:
        `AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl` (floats, -1 where
        COCO leaves them undefined), `per_class_AP`, `per_class_AP50` and
        `per_class_num_gt` (keyed by class name), `num_images`, `num_detections`,
        `num_gt_boxes`, `confusion_matrix` (`labels`, `counts`, thresholds), `summary`
        (COCO's 12-line text) and, with `out_dir`, `files` (the written paths).

    Raises:
        DataError: the classes do not match, the ground truth has no image, or a
            detection is malformed or names an unknown image or category.
    """
    class_names, category_ids = list(class_names), [int(c) for c in category_ids]
    if len(class_names) != len(category_ids) or len(set(category_ids)) != len(category_ids):
        raise DataError(f"class_names {class_names} and category_ids {category_ids} must "
                        "have the same length and distinct ids")
    if not coco_gt.getImgIds():
        raise DataError("the ground truth has no images to evaluate on")
    annotations = _clean_detections(coco_gt, detections, category_ids)
    evaluator, summary = _run_cocoeval(coco_gt, _results_coco(coco_gt, annotations),
                                       category_ids)
    result: dict[str, Any] = {n: float(v) for n, v in zip(STAT_NAMES, evaluator.stats)}
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]; area "all", 100 dets below
    order = evaluator.params.catIds
    result["per_class_AP"], result["per_class_AP50"], result["per_class_num_gt"] = {}, {}, {}
    for name, cid in zip(class_names, category_ids):
        k = order.index(cid)
        result["per_class_AP"][name] = _mean_valid(precision[:, :, k, 0, -1])
        result["per_class_AP50"][name] = _mean_valid(precision[0, :, k, 0, -1])
        result["per_class_num_gt"][name] = sum(
            1 for a in coco_gt.anns.values()
            if int(a["category_id"]) == cid and not a.get("iscrowd", 0))
    result["num_images"] = len(coco_gt.getImgIds())
    result["num_detections"] = len(annotations)
    result["num_gt_boxes"] = int(sum(result["per_class_num_gt"].values()))
    counts = confusion_matrix(coco_gt, annotations, category_ids=category_ids)
    result["confusion_matrix"] = {"labels": class_names + [BACKGROUND],
                                  "counts": counts.tolist(),
                                  "score_threshold": CONFUSION_SCORE_THRESHOLD,
                                  "iou_threshold": CONFUSION_IOU_THRESHOLD}
    result["summary"] = summary
    if out_dir is not None:
        result["files"] = _write_outputs(out_dir, prefix, result, evaluator, class_names,
                                         category_ids)
    return result
