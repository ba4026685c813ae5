"""Check that Keras, the SavedModel and ONNX Runtime give the same results.

Usage:
    python -m export.verify --run RUN_DIR --onnx FILE.onnx --saved-model DIR
        [--images IMG ...] [--weights best|last|final]

Raw outputs are compared on identical letterboxed frames (the data pipeline's
`letterbox`, fed as float32 to Keras and the SavedModel's `raw` signature, and as the
uint8 `S x S` frame to ONNX, whose in-graph letterbox is then the identity). Final
detections are compared on the images themselves, each backend letterboxing on its
own; so are the classification and multilabel heads' probabilities, top-k classes and
thresholded tags (`export.verify_labels`). Exit 0 and a PASS table when raw outputs
agree within 1e-4 (times the largest magnitude of the output, when above 1: float32
rounding grows with the values), detections match (same count, IoU > 0.99 between
matched boxes, same classes) and the image-level outputs agree; exit 1 and the differing
numbers otherwise.

`--int8 FILE_int8.onnx` switches to the agreement check of an int8 file against
`--onnx` (`export.verify_int8`; `--saved-model` is then not needed).
"""
import argparse
import dataclasses
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from data_pipelines.decode import letterbox, unletterbox
from effdet_tf import nms_tf
from effdet_tf.cli import make_parser, run_cli
from effdet_tf.errors import ExportError
from export.cli_args import add_run_args
from export.graph import RAW_KEYS, DetectionGraph, load_graph
from export.boxes import box_iou
from export.io import read_image
from export.onnx import onnx_session
from export.saved_model import RAW_KEY, SERVING_KEY
from export.verify_labels import compare_labels, label_heads

RAW_TOLERANCE = 1e-4
MIN_IOU = 0.99
# float32 sigmoid rounds to exactly 1.0 above this logit: scores tie and NMS order,
# the max_detections cut and the class of a box become arbitrary.
SATURATED_LOGIT = 17.0
DEFAULT_SIZES = ((96, 128), (128, 96), (256, 192))

Detections = Dict[str, Tuple[np.ndarray, np.ndarray]]  # head -> (boxes [n, 4], classes [n])


@dataclasses.dataclass
class Row:
    """One line of the report.

    Attributes:
        check: what was compared.
        backend: the backend compared with Keras.
        value: the measured numbers, as text.
        ok: whether it is within limits.
    """

    check: str
    backend: str
    value: str
    ok: bool


def generated_images(image_size: int, seed: int = 0) -> List[np.ndarray]:
    """A few deterministic test images: random rectangles on a smooth background.

    Sizes keep the letterbox scale exact (1 or 1/2) so every backend sees the same
    frame; the last one is a 2x pixel repetition of a smaller picture.

    Args:
        image_size: the model side `S` (sizes scale with it).
        seed: random seed.

    Returns:
        uint8 `[H, W, 3]` arrays.
    """
    rng = np.random.default_rng(seed)
    images = []
    for height, width in DEFAULT_SIZES:
        height, width = height * image_size // 128, width * image_size // 128
        small = (height // 2, width // 2) if height > image_size else (height, width)
        yy, xx = np.mgrid[0:small[0], 0:small[1]]
        image = np.stack([xx * 255 // max(1, small[1] - 1), yy * 255 // max(1, small[0] - 1),
                          np.full_like(xx, 128)], axis=-1).astype(np.uint8)
        for _ in range(6):
            x1, y1 = rng.integers(0, small[1] - 8), rng.integers(0, small[0] - 8)
            x2 = x1 + rng.integers(8, max(9, small[1] // 2))
            y2 = y1 + rng.integers(8, max(9, small[0] // 2))
            image[y1:y2, x1:x2] = rng.integers(0, 256, 3)
        if small != (height, width):
            image = image.repeat(2, axis=0).repeat(2, axis=1)
        images.append(image)
    return images


def read_images(paths: Sequence[str]) -> List[np.ndarray]:
    """Reads image files as upright RGB uint8 arrays (ExportError naming an unreadable one)."""
    return [read_image(path) for path in paths]


def match_detections(ref: Tuple[np.ndarray, np.ndarray],
                     other: Tuple[np.ndarray, np.ndarray]) -> Tuple[str, bool]:
    """Greedily matches two detection lists by class, then IoU.

    Args:
        ref: `(boxes [n, 4], classes [n])` of the reference.
        other: the same of the backend checked.

    Returns:
        `(text, ok)`: counts, lowest matched IoU and class mismatches; ok when counts
        agree, every IoU exceeds `MIN_IOU` and classes agree.
    """
    ref_boxes, ref_classes = ref
    boxes, classes = other
    unused = list(range(len(boxes)))
    worst, wrong = 1.0, 0
    for box, cls in zip(ref_boxes, ref_classes):
        if not unused:
            worst = 0.0
            break
        ious = [box_iou(box, boxes[j]) for j in unused]
        # Boxes are shared across classes (q = 1): prefer a same-class candidate.
        best = int(np.argmax([iou + float(classes[j] == cls) for iou, j in zip(ious, unused)]))
        worst = min(worst, ious[best])
        wrong += int(classes[unused[best]] != cls)
        unused.pop(best)
    ok = len(ref_boxes) == len(boxes) and worst > MIN_IOU and wrong == 0
    text = (f"count {len(ref_boxes)} vs {len(boxes)}, min IoU {worst:.4f}, "
            f"class mismatches {wrong}")
    return text, ok


def _split(outputs: Dict[str, np.ndarray], heads: Sequence[str]) -> Detections:
    """Turns `<head>_boxes/_classes/_num_detections` of one image into detections."""
    result = {}
    for head in heads:
        count = int(np.asarray(outputs[f"{head}_num_detections"]).reshape(-1)[0])
        result[head] = (np.asarray(outputs[f"{head}_boxes"])[0, :count],
                        np.asarray(outputs[f"{head}_classes"])[0, :count])
    return result


class Backends:
    """The three runtimes on one run: Keras (the run folder), SavedModel, ONNX Runtime.

    Args:
        graph: the run's `DetectionGraph` (its Keras model is the reference).
        saved_model: SavedModel folder.
        onnx_path: `.onnx` file.

    Raises:
        ExportError: an export cannot be loaded or lacks an output.
    """

    def __init__(self, graph: DetectionGraph, saved_model: str, onnx_path: str) -> None:
        self.graph = graph
        try:
            self.loaded = tf.saved_model.load(saved_model)
            self.serving = self.loaded.signatures[SERVING_KEY]
            self.raw_fn = self.loaded.signatures[RAW_KEY]
        except (OSError, KeyError, ValueError) as err:
            raise ExportError(f"cannot load the SavedModel {saved_model}: {err}") from err
        try:
            self.session = onnx_session(onnx_path)
        except Exception as err:  # pylint: disable=broad-except  # ORT raises many types
            raise ExportError(f"cannot load {onnx_path} in ONNX Runtime: {err}") from err
        self.onnx_names = [out.name for out in self.session.get_outputs()]
        self.onnx_input = self.session.get_inputs()[0].name
        needed = [f"{h}_{k}" for h in graph.detection_heads
                  for k in RAW_KEYS + ("boxes", "num_detections")]
        needed += [f"{h}_probabilities" for h in label_heads(graph.model)]
        missing = [name for name in needed if name not in self.onnx_names]
        if missing:
            raise ExportError(f"{onnx_path} lacks outputs {missing} (not exported from this "
                              "run's heads by export.onnx?)")

    def onnx(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        """Runs the ONNX model on a uint8 batch."""
        return dict(zip(self.onnx_names, self.session.run(None, {self.onnx_input: images})))

    def keras_raw(self, frames: np.ndarray) -> Dict[str, np.ndarray]:
        """Keras raw outputs of letterboxed frames."""
        return {k: v.numpy() for k, v in self.graph.raw(tf.constant(frames, tf.float32)).items()}

    def keras_detections(self, image: np.ndarray) -> Detections:
        """Keras detections in input pixels, letterboxed by the data pipeline's code."""
        graph = self.graph
        frame, scale_xy, pad_xy = letterbox(tf.constant(image), tf.shape(image)[:2],
                                            graph.image_size)
        found = nms_tf.detect(graph.model, tf.cast(frame, tf.float32)[None],
                              score_threshold=graph.score_threshold,
                              iou_threshold=graph.iou_threshold,
                              max_detections=graph.max_detections)
        result = {}
        for head in graph.detection_heads:
            count = int(found[head]["num_detections"][0])
            boxes = unletterbox(found[head]["boxes"][0, :count], scale_xy, pad_xy,
                                image.shape[:2]).numpy()
            result[head] = (boxes, found[head]["classes"][0, :count].numpy())
        return result


def compare(backends: Backends, images: Sequence[np.ndarray]) -> List[Row]:
    """Runs every backend on the images and lists the differences.

    Args:
        backends: the loaded runtimes.
        images: uint8 `[H, W, 3]` arrays.

    Returns:
        The report rows.
    """
    graph = backends.graph
    size = graph.image_size
    frames = np.stack([letterbox(tf.constant(img), tf.shape(img)[:2], size)[0].numpy()
                       for img in images])
    ref = backends.keras_raw(frames)
    others = {
        "saved_model": {k: v.numpy() for k, v in
                        backends.raw_fn(images=tf.constant(frames, tf.float32)).items()},
        "onnx": backends.onnx(frames),
    }
    rows = []
    for name in sorted(ref):
        # float32 rounding grows with the values: the limit is relative past magnitude 1
        scale = max(1.0, float(np.max(np.abs(ref[name]))))
        for backend, values in others.items():
            diff = float(np.max(np.abs(values[name] - ref[name])))
            text = f"max |diff| {diff:.2e}" + (f" (values up to {scale:.3g})" if scale > 1 else "")
            rows.append(Row(f"raw {name}", backend, text, diff <= RAW_TOLERANCE * scale))
    heads = graph.detection_heads  # the detections compared; raw outputs cover every head
    total = {head: 0 for head in heads}
    for index, image in enumerate(images):
        ref_det = backends.keras_detections(image)
        batch = tf.constant(image[None])
        outputs = {
            "saved_model": _split({k: v.numpy() for k, v in
                                   backends.serving(images=batch).items()}, heads),
            "onnx": _split(backends.onnx(image[None]), heads),
        }
        for head in heads:
            total[head] += len(ref_det[head][0])
            for backend, found in outputs.items():
                text, ok = match_detections(ref_det[head], found[head])
                rows.append(Row(f"detections {head} image {index} "
                                f"({image.shape[1]}x{image.shape[0]})", backend, text, ok))
    for head, count in total.items():
        rows.append(Row(f"keras detections {head} (all images)", "keras", str(count), True))
    runners = {"saved_model": lambda batch: {k: v.numpy() for k, v in backends.serving(
        images=tf.constant(batch)).items()}, "onnx": backends.onnx}
    rows.extend(Row(*check) for check in compare_labels(graph.model, size, images, runners))
    rows.extend(saturation_notes(ref, heads, graph.max_detections))
    return rows


def saturation_notes(raw: Dict[str, np.ndarray], heads: Sequence[str],
                     max_detections: int) -> List[Row]:
    """Informational rows for heads whose saturated scores make detections ambiguous.

    Past `SATURATED_LOGIT` a score is exactly 1.0 in float32. One saturated class per
    box is harmless; but when a box has several saturated classes its class depends on
    rounding, and when an image has more saturated boxes than `max_detections` so does
    which of them are kept. Detection checks can then fail although the raw outputs
    agree, and the row says so.

    Args:
        raw: Keras raw outputs (`<head>_class_logits` `[B, A, C]` among them).
        heads: head names.
        max_detections: detections kept per image and head.

    Returns:
        One row per ambiguous head (never a failure by itself).
    """
    rows = []
    for head in heads:
        logits = raw[f"{head}_class_logits"]
        saturated = logits > SATURATED_LOGIT
        multi_class = int(np.sum(saturated.sum(axis=-1) >= 2))
        boxes_per_image = int(np.max(saturated.any(axis=-1).sum(axis=-1)))
        if multi_class or boxes_per_image > max_detections:
            rows.append(Row(
                f"note {head}", "keras",
                f"class logits up to {float(np.max(logits)):.1f}: {multi_class} box(es) with "
                f"several classes at score 1.0, up to {boxes_per_image} boxes at 1.0 per "
                f"image (keeping {max_detections}); ties make detection classes and the cut "
                "arbitrary (a model far from its training conditions?)", True))
    return rows


def format_rows(rows: Sequence[Row]) -> str:
    """The report as an aligned text table."""
    header = Row("check", "backend", "value", True)
    width = [max(len(getattr(r, f)) for r in [header, *rows]) for f in ("check", "backend",
                                                                          "value")]
    lines = []
    for row in [header, *rows]:
        status = "result" if row is header else ("PASS" if row.ok else "FAIL")
        if row.check.startswith("note "):
            status = "info"
        lines.append(f"{row.check:<{width[0]}}  {row.backend:<{width[1]}}  "
                     f"{row.value:<{width[2]}}  {status}")
    return "\n".join(lines)


def verify(run: str, onnx_path: str, saved_model: str, *,
           images: Optional[Sequence[np.ndarray]] = None, weights: str = "final",
           image_size: Optional[int] = None) -> Tuple[bool, List[Row]]:
    """Compares Keras, SavedModel and ONNX Runtime on the same images.

    Args:
        run: the run folder (the Keras reference).
        onnx_path: the exported `.onnx` file.
        saved_model: the exported SavedModel folder.
        images: uint8 `[H, W, 3]` arrays; generated ones when None.
        weights: which checkpoint of the run is the reference.
        image_size: the side the exports were made at (`--image-size` of the export
            CLIs); None for the run's.

    Returns:
        `(passed, rows)`.

    Raises:
        ConfigError: bad run folder.
        ExportError: an export cannot be loaded.

    Example:
        >>> passed, rows = verify("runs/demo", "demo.onnx", "demo_savedmodel")
    """
    graph, _ = load_graph(run, weights=weights, image_size=image_size)
    backends = Backends(graph, saved_model, onnx_path)
    if images is None:
        images = generated_images(graph.image_size)
    rows = compare(backends, images)
    return all(row.ok for row in rows), rows


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = make_parser("python -m export.verify",
                         description="Compare Keras, SavedModel and ONNX Runtime outputs of a run.")
    add_run_args(parser)
    parser.add_argument("--onnx", required=True, help="exported .onnx file")
    parser.add_argument("--saved-model", required=True, help="exported SavedModel folder")
    parser.add_argument("--images", nargs="+", default=None,
                        help="image files (None: a few generated images)")
    parser.add_argument("--int8", default=None,
                        help="an int8 .onnx file: check its agreement with --onnx instead "
                             "(see python -m export.verify_int8 --help)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the CLI.

    Args:
        argv: arguments (default `sys.argv[1:]`).

    Returns:
        0 when everything matches, 1 otherwise.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(arg == "--int8" or arg.startswith("--int8=") for arg in argv):
        from export import verify_int8  # pylint: disable=import-outside-toplevel

        return verify_int8.main(argv)
    args = build_parser().parse_args(argv)
    images = read_images(args.images) if args.images else None
    passed, rows = verify(args.run, args.onnx, args.saved_model, images=images,
                          weights=args.weights, image_size=args.image_size)
    print(format_rows(rows))
    if passed:
        print("PASS: Keras, SavedModel and ONNX Runtime agree")
        return 0
    failed = sum(not row.ok for row in rows)
    print(f"FAIL: {failed} check(s) out of limits (raw <= {RAW_TOLERANCE:g} x max(1, |value|), "
          f"IoU > {MIN_IOU}, same counts and classes)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    run_cli(main)
