"""Agreement of an int8 ONNX file with its fp32 original, on real images.

Usage:
    python -m export.verify --run RUN_DIR --onnx FILE.onnx --int8 FILE_int8.onnx
        [--images FILE_OR_DIR ...  |  --split val] [--max-images 64]
    (or `python -m export.verify_int8` with the same arguments)

Quantisation changes numbers, so this is an agreement check, not an equality check. Both
files run in ONNX Runtime on the same images, one image per call, each at its own size.
The heads and their kinds come from `preprocessing.json` beside `--onnx`.

- Detection heads: the share of fp32 detections scoring at least `--min-score` (0.25,
  the confidence a served model shows) that the int8 model also finds among all its
  detections: same class and IoU >= 0.5, matched one to one, highest fp32 score first.
  The detail column adds the rate over every fp32 detection the export keeps (its
  evaluation threshold, 0.001 by default) and on how many images the fp32 model filled
  `max_detections`: in that low-score tail the cut among near-equal scores is fragile,
  which says more about the model than about quantisation (the test metric of
  `train.evaluate --model` judges the tail).
- Classification heads: the share of images with the same top-1 class.
- Multilabel heads: the share of image x tag decisions that are equal.

A table with each rate, its count and its threshold (`MIN_AGREEMENT`); exit 0 when
every rate reaches its threshold, 1 otherwise. A head without any fp32 detection on
the images reports "n/a" and does not fail (nothing to compare: use images the
model finds objects in). Images: `--images` files or folders (image files below them),
else `--split` of the run's datasets (default val); at most `--max-images`, drawn with a
fixed seed.
"""
import argparse
import dataclasses
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from effdet_tf.cli import make_parser, run_cli
from effdet_tf.errors import ConfigError, ExportError
from export.io import read_image
from export.boxes import box_iou

MIN_IOU = 0.5
MIN_SCORE = 0.25
MIN_AGREEMENT = {"detection": 0.90, "classification": 0.95, "multilabel": 0.95}
DEFAULT_MAX_IMAGES = 64
SEED = 1  # calibration draws with seed 0: another draw where the split is the same
METRICS = {"detection": "fp32 dets >= min score matched (class, IoU>=.5)",
           "classification": "top-1 class equal",
           "multilabel": "tag decisions equal"}


@dataclasses.dataclass
class Agreement:
    """One head's agreement.

    Attributes:
        head: head name.
        kind: detection, classification or multilabel.
        agreed: matched detections, equal top-1 classes or equal tag decisions.
        total: fp32 detections, images or image x tag decisions.
        note: extra figures for the table.
    """

    head: str
    kind: str
    agreed: int
    total: int
    note: str = ""

    @property
    def rate(self) -> Optional[float]:
        """`agreed / total`; None when there is nothing to compare."""
        return self.agreed / self.total if self.total else None

    @property
    def ok(self) -> bool:
        """Whether the rate reaches `MIN_AGREEMENT` of its kind (True when None)."""
        rate = self.rate
        return rate is None or rate >= MIN_AGREEMENT[self.kind]


def matched(ref: Tuple[np.ndarray, np.ndarray, np.ndarray],
            other: Tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Which reference detections the other list holds (same class, IoU >= `MIN_IOU`).

    One to one, greedily: reference detections by decreasing score, each taking the
    unmatched candidate of its class with the highest IoU. Higher scores are matched
    first, so the flags of the detections above any score are what matching those
    alone would give.

    Args:
        ref: `(boxes [n, 4], classes [n], scores [n])` of the fp32 model.
        other: `(boxes [m, 4], classes [m])` of the int8 model.

    Returns:
        bool `[n]`, True where the detection was matched.
    """
    boxes, classes, scores = ref
    unused = list(range(len(other[0])))
    found = np.zeros(len(boxes), bool)
    for index in np.argsort(-np.asarray(scores), kind="stable"):
        candidates = [(box_iou(boxes[index], other[0][j]), j) for j in unused
                      if other[1][j] == classes[index]]
        if candidates:
            best_iou, best = max(candidates)
            if best_iou >= MIN_IOU:
                found[index] = True
                unused.remove(best)
    return found


def _detections(out: Dict[str, np.ndarray], head: str) -> Tuple[np.ndarray, ...]:
    """`(boxes, classes, scores)` of image 0 of a batch, cut at `num_detections`."""
    count = int(np.asarray(out[f"{head}_num_detections"]).reshape(-1)[0])
    return tuple(np.asarray(out[f"{head}_{key}"])[0, :count]
                 for key in ("boxes", "classes", "scores"))


def agreement(heads: Dict[str, str], fp32: Sequence[Dict[str, np.ndarray]],
              int8: Sequence[Dict[str, np.ndarray]], *,
              min_score: float = MIN_SCORE) -> List[Agreement]:
    """Per-head agreement of two models' outputs on the same images.

    Args:
        heads: `{head: kind}`.
        fp32: per image, the fp32 model's outputs on a batch of one.
        int8: the same of the int8 model.
        min_score: fp32 detections below this score are not counted (see the module
            docstring).

    Returns:
        One `Agreement` per head, in `heads` order.
    """
    rows = []
    for head, kind in heads.items():
        agreed = total = 0
        note = ""
        if kind == "detection":
            found = full = every = every_agreed = 0
            for ref, out in zip(fp32, int8):
                ref_det, det = _detections(ref, head), _detections(out, head)
                hits, keep = matched(ref_det, det[:2]), ref_det[2] >= min_score
                agreed += int(hits[keep].sum())
                total += int(keep.sum())
                every_agreed += int(hits.sum())
                every += len(hits)
                found += len(det[0])
                full += int(len(ref_det[0]) == np.asarray(ref[f"{head}_boxes"]).shape[1])
            note = (f"score >= {min_score:g}; at every score: {every_agreed / max(every, 1):.3f}"
                    f" of fp32 {every} (int8 {found})")
            if full:
                note += (f"; max_detections reached on {full} of {len(fp32)} fp32 images (which "
                         "near-equal scores make the cut is fragile)")
        elif kind in ("classification", "multilabel"):
            diff = 0.0
            for ref, out in zip(fp32, int8):
                probs = [np.asarray(o[f"{head}_probabilities"])[0] for o in (ref, out)]
                diff = max(diff, float(np.max(np.abs(probs[0] - probs[1]))))
                if kind == "classification":
                    agreed += int(np.argmax(probs[0]) == np.argmax(probs[1]))
                    total += 1
                else:
                    tags = [np.asarray(o[f"{head}_tags"])[0] for o in (ref, out)]
                    agreed += int(np.sum(tags[0] == tags[1]))
                    total += tags[0].size
            note = f"max |probability diff| {diff:.3f}"
        else:
            continue
        rows.append(Agreement(head, kind, agreed, total, note))
    return rows


def compare_files(fp32_path: str, int8_path: str, images: Sequence[np.ndarray], *,
                  min_score: float = MIN_SCORE) -> List[Agreement]:
    """Runs both files on every image (a batch of one each) and measures agreement.

    Args:
        fp32_path: the fp32 `.onnx` file (its `preprocessing.json` names the heads).
        int8_path: the int8 file.
        images: uint8 `[H, W, 3]` arrays.
        min_score: the lowest fp32 detection score counted.

    Returns:
        One `Agreement` per head.

    Raises:
        ExportError: a file cannot be loaded or its sidecars are missing.
    """
    from export.onnx import onnx_session  # pylint: disable=import-outside-toplevel  # heavy
    from export.serve_model import find_export  # pylint: disable=import-outside-toplevel

    try:
        heads = {head.name: head.kind for head in find_export(fp32_path, "onnx").heads}
    except ConfigError as err:
        raise ExportError(str(err).replace("--model", "--onnx")) from err
    sessions = []
    for path in (fp32_path, int8_path):
        try:
            sessions.append(onnx_session(path))
        except Exception as err:  # pylint: disable=broad-except  # ORT raises many types
            raise ExportError(f"cannot load {path} in ONNX Runtime: {err}") from err
    names = [[o.name for o in s.get_outputs()] for s in sessions]
    outputs: List[List[Dict[str, np.ndarray]]] = [[], []]
    for image in images:
        for index, session in enumerate(sessions):
            values = session.run(None, {session.get_inputs()[0].name: image[None]})
            outputs[index].append(dict(zip(names[index], values)))
    return agreement(heads, outputs[0], outputs[1], min_score=min_score)


def format_table(rows: Sequence[Agreement], count: int) -> str:
    """The agreement as a text table, one line per head."""
    lines = [f"int8 vs fp32 ONNX agreement on {count} image(s)",
             f"{'head':<16} {'kind':<14} {'metric':<49} {'rate':>7} {'n':>7} "
             f"{'min':>5}  result  detail"]
    for row in rows:
        rate = "n/a" if row.rate is None else f"{row.rate:.3f}"
        status = "PASS" if row.ok else "FAIL"
        if row.rate is None:
            status = "n/a"
        lines.append(f"{row.head:<16} {row.kind:<14} {METRICS[row.kind]:<49} {rate:>7} "
                     f"{row.total:>7} {MIN_AGREEMENT[row.kind]:>5.2f}  {status:<6}  {row.note}")
    return "\n".join(lines)


def choose_images(args: argparse.Namespace) -> List[str]:
    """The image files the CLI arguments name, at most `--max-images`, drawn seeded."""
    # pylint: disable=import-outside-toplevel  # TensorFlow-heavy: `--help` stays fast
    from export.quantize import draw_images, run_config, split_images
    from train.predict_table import image_inputs

    if args.max_images < 1:
        raise ConfigError(f"--max-images must be >= 1, got {args.max_images}")
    if args.images:
        per_source = {"images": [path for _, path in image_inputs(args.images)]}
    elif args.run:
        per_source = split_images(run_config(args.run), args.split, "the int8 agreement check")
    else:
        raise ConfigError("give --images, or --run (its --split images are used)")
    return draw_images(per_source, args.max_images, SEED)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = make_parser("python -m export.verify --int8",
                         description="Agreement of an int8 ONNX file with its fp32 original.")
    parser.add_argument("--run", default=None,
                        help="run folder (its --split images, when --images is not given)")
    parser.add_argument("--onnx", required=True, help="the fp32 .onnx file (export.onnx)")
    parser.add_argument("--int8", required=True, help="the int8 .onnx file (export.onnx --int8)")
    parser.add_argument("--images", nargs="+", default=None,
                        help="image files or folders (instead of the run's --split)")
    parser.add_argument("--split", default="val", choices=("train", "val", "test"),
                        help="split of the run's datasets to draw images from")
    parser.add_argument("--max-images", type=int, default=DEFAULT_MAX_IMAGES,
                        help="images drawn (seeded) at most")
    parser.add_argument("--min-score", type=float, default=MIN_SCORE,
                        help="fp32 detections below this score are not counted")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the CLI.

    Args:
        argv: arguments (default `sys.argv[1:]`).

    Returns:
        0 when every head agrees enough, 1 otherwise.
    """

    args = build_parser().parse_args(argv)
    if not 0.0 <= args.min_score <= 1.0:  # before any image is listed or read
        raise ConfigError(f"--min-score must be in 0..1, got {args.min_score}")
    paths = choose_images(args)
    rows = compare_files(args.onnx, args.int8, [read_image(path) for path in paths],
                         min_score=args.min_score)
    print(format_table(rows, len(paths)))
    failed = [row.head for row in rows if not row.ok]
    if not failed:
        print("PASS: the int8 model agrees with the fp32 model")
        return 0
    print(f"FAIL: agreement below the minimum for head(s) {', '.join(failed)} (detections "
          f"{MIN_AGREEMENT['detection']}, top-1 {MIN_AGREEMENT['classification']}, tags "
          f"{MIN_AGREEMENT['multilabel']})", file=sys.stderr)
    return 1


if __name__ == "__main__":
    run_cli(main)
