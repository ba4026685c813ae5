"""Evaluation of every head on its own datasets: `python -m train.evaluate --run RUN`.

Each head is scored only on the split of each dataset it was trained on, every image of
that split counted: detection heads with pycocotools (images with no detection
included), classification and multilabel heads with `train.label_eval` (accuracy, top-2,
balanced accuracy, macro F1, mAP; micro/macro F1 and mAP at the saved thresholds), next
to the trivial baseline.

With several datasets, each detection head is also run on the split of every dataset that
does not label it, and the detections it makes there (score >= 0.3) are counted
(`train.cross_eval`): a head's false alarms on other data, which the COCO metrics do
not see. `--no-cross` skips them.

`--model EXPORT` scores an export of the run instead (ONNX, int8 ONNX or SavedModel, see
`train.export_runner`) with the same images and rules, so fp32 and int8 files can be
compared by their metrics.
"""
import json
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from data_pipelines.decode import unletterbox
from effdet_tf.cli import make_parser, run_cli
from effdet_tf.config import ExperimentConfig, check_dataset_paths
from train.coco_eval import evaluate_detections
from train.cross_eval import cross_detections, format_cross_table
from train.data import eval_dataset, scored_pairs
from train.export_runner import ExportRunner
from train.export_runner import detections as detections_of
from train.label_eval import evaluate_labels, format_label_table

TABLE_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")


def to_original_xywh(boxes: np.ndarray, scale: float, pad: np.ndarray,
                     orig_size: np.ndarray) -> np.ndarray:
    """Maps xyxy boxes of the letterboxed frame to COCO xywh in original image pixels.

    Args:
        boxes: `[K, 4]` xyxy in model pixels.
        scale: letterbox scale of the image.
        pad: `[2]` letterbox offset (x, y).
        orig_size: `[2]` original (height, width).

    Returns:
        `[K, 4]` boxes `[x, y, w, h]` clipped to the original image.
    """
    xyxy = unletterbox(boxes, scale, pad, orig_size).numpy()
    return np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)


def predict_head(detector: Any, cfg: ExperimentConfig, dataset_id: int, split: str,
                 head: str) -> Tuple[List[Dict[str, Any]], Any]:
    """Runs the detector over one dataset's split; returns COCO-style detections of a head.

    Args:
        detector: the detector, or an `train.export_runner.ExportRunner`.
        cfg: the experiment config.
        dataset_id: index of the dataset.
        split: "train", "val" or "test".
        head: a detection head the dataset trains.

    Returns:
        `(detections, source)`: detections `{image_id, category_id, bbox, score}` in
        original pixels (classes the dataset has no category for are left out), and the
        dataset's `CocoSource` (its ground truth, classes in the head's order).
    """
    dataset, source = eval_dataset(cfg, dataset_id, split)
    category_ids = source.category_ids
    detections: List[Dict[str, Any]] = []
    name = cfg.data.datasets[dataset_id].name
    with tqdm(total=len(source.image_ids), desc=f"eval {head} on {name}/{split}", unit="img",
              leave=False, disable=None) as progress:  # None: no bar in a log file
        for batch in dataset:
            out = detections_of(detector, batch["images"], head, cfg)
            meta = {k: batch[k].numpy() for k in ("image_id", "scale", "pad", "orig_size")}
            for b in range(len(meta["image_id"])):
                count = int(out["num_detections"][b])
                xywh = to_original_xywh(out["boxes"][b, :count], float(meta["scale"][b]),
                                        meta["pad"][b], meta["orig_size"][b])
                for box, score, cls in zip(xywh, out["scores"][b, :count],
                                           out["classes"][b, :count]):
                    if category_ids[int(cls)] < 0:
                        continue
                    detections.append({"image_id": int(meta["image_id"][b]),
                                       "category_id": int(category_ids[int(cls)]),
                                       "bbox": [round(float(v), 2) for v in box],
                                       "score": round(float(score), 5)})
            progress.update(len(meta["image_id"]))
    return detections, source


def evaluation_pairs(cfg: ExperimentConfig) -> List[Tuple[str, int, str]]:
    """`(result key, dataset index, head)` for every dataset a detection head is scored on
    (see `train.data.scored_pairs`)."""
    return scored_pairs(cfg, ("detection",))


def evaluate_model(detector: Any, cfg: ExperimentConfig, classes: Dict[str, Dict[str, Any]],
                   *, split: str = "test", out_dir: Optional[str] = None) -> Dict[str, Any]:
    """Metrics of every head on each dataset that trains it: COCO metrics of detection
    heads, `train.label_eval` metrics (with the trivial baseline) of image-level heads.

    Args:
        detector: the detector.
        cfg: the experiment config.
        classes: per-head `{"names", ...}`.
        split: split to evaluate.
        out_dir: where PNGs and `metrics_<split>.json` go (nothing written when None).

    Returns:
        `{key: metrics}` (keys from `train.data.scored_pairs`; see
        `train.coco_eval.evaluate_detections` and `train.label_eval.evaluate_labels`).
    """
    results: Dict[str, Any] = {}
    for key, index, head in evaluation_pairs(cfg):
        detections, source = predict_head(detector, cfg, index, split, head)
        scored = [i for i, cid in enumerate(source.category_ids) if cid >= 0]
        results[key] = evaluate_detections(
            source.coco, detections, class_names=[classes[head]["names"][i] for i in scored],
            category_ids=[source.category_ids[i] for i in scored], out_dir=out_dir,
            prefix=f"{key.replace('/', '_')}_{split}_")
    results.update(evaluate_labels(detector, cfg, classes, split=split, out_dir=out_dir))
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, f"metrics_{split}.json"), "w",
                  encoding="utf-8") as stream:
            json.dump({h: {k: v for k, v in m.items() if k != "summary"}
                       for h, m in results.items()}, stream, indent=1)
    return results


def format_table(results: Dict[str, Any], split: str) -> str:
    """Fixed-width tables of the main metrics: COCO metrics of the detection heads, one row
    per head, then the image-level heads' metrics with their baselines."""
    detection = {h: m for h, m in results.items() if "kind" not in m}
    rows = []
    if detection:
        rows += [f"COCO metrics on each head's own {split} split",
                 f"{'head':<14}" + "".join(f"{k:>8}" for k in TABLE_KEYS) + f"{'images':>8}"]
        for head, metrics in detection.items():
            rows.append(f"{head:<14}" + "".join(f"{metrics[k]:>8.3f}" for k in TABLE_KEYS)
                        + f"{metrics.get('num_images', 0):>8}")
    labels = format_label_table(results, split)
    return "\n".join(rows + ([labels] if labels else []))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point."""
    parser = make_parser("python -m train.evaluate", description=__doc__)
    parser.add_argument("--run", required=True, help="run folder written by train.fit")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--weights", default="final", choices=("best", "last", "final"))
    parser.add_argument("--model", default=None, metavar="EXPORT",
                        help="score this export of the run instead of its Keras weights: a "
                             ".onnx file (fp32 or int8), a SavedModel folder or an export "
                             "folder; results go to RUN/eval_<split>_<backend>_<folder>_<file>")
    parser.add_argument("--backend", default=None, choices=("onnx", "saved_model"),
                        help="with --model: which model of an export folder (default: ONNX)")
    parser.add_argument("--no-cross", action="store_true",
                        help="skip running each detection head on the other datasets' images")
    args = parser.parse_args(argv)
    # pylint: disable-next=import-outside-toplevel  # heavy
    from train.run_dir import load_run, load_run_meta
    out_dir = os.path.join(args.run, f"eval_{args.split}")
    if args.model:
        cfg, classes = load_run_meta(args.run)
        detector = ExportRunner(args.model, args.backend)
        detector.check_run(cfg, classes, args.run)
        out_dir += "_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", detector.label)
        print(f"scoring the export {detector.export.path} ({detector.export.backend})")
    else:
        cfg, detector, classes = load_run(args.run, weights=args.weights)
    check_dataset_paths(cfg, splits=(args.split,))
    results = evaluate_model(detector, cfg, classes, split=args.split, out_dir=out_dir)
    print(format_table(results, args.split))
    written = f"metrics_{args.split}.json"
    if not args.no_cross:
        cross = cross_detections(detector, cfg, split=args.split)
        if cross:
            print(format_cross_table(cross))
            with open(os.path.join(out_dir, f"cross_{args.split}.json"), "w",
                      encoding="utf-8") as stream:
                json.dump(cross, stream, indent=1)
            written += f" and cross_{args.split}.json"
    print(f"plots and {written} in {out_dir}")
    return 0


if __name__ == "__main__":
    run_cli(main)
