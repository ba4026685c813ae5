"""Run every head on images: `python -m train.predict --run RUN IMAGE|FOLDER [...]`
or `--table FILE --id-column uuid` (a CSV or parquet table of image ids).

Writes `predictions.parquet`, one row per image (`uuid`, the top classes of each
classification head with their probabilities, each multilabel head's tags 0/1 with
their probabilities, each detection head's box count; see `train.predict_table`), and
`detections.json` with the boxes in original image pixels. Image files named on the
command line are also drawn (`--draw all` draws folders and tables too): every head's
boxes in its colour, the image-level heads' labels in a strip below. `--compose` first
pastes several images side by side into one (for example a fruits photo next to a
kitchen photo), so one picture holds objects of both datasets.
"""
import functools
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from tqdm import tqdm

from data_pipelines.draw import scalable_font
from effdet_tf.cli import make_parser, run_cli
from effdet_tf.errors import DataError
from train.predict_table import (PREDICTIONS_FILE, head_columns, image_inputs, label_lines,
                                 table_inputs, write_predictions)

HEAD_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48),
                (145, 30, 180), (70, 240, 240), (240, 50, 230), (128, 128, 0))


def read_rgb(path: str) -> np.ndarray:
    """Reads an image upright (EXIF applied) as RGB uint8.

    Raises:
        DataError: the file is missing or not a readable image.
    """
    try:
        with Image.open(path) as img:
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read image ({err})") from err


def compose(paths: Sequence[str], height: int = 512) -> np.ndarray:
    """Pastes images side by side at a common height (white background).

    Args:
        paths: image files.
        height: height of the composite.

    Returns:
        RGB uint8 `[height, W, 3]`.
    """
    tiles = []
    for path in paths:
        img = Image.fromarray(read_rgb(path))
        width = max(1, round(img.width * height / img.height))
        tiles.append(img.resize((width, height), Image.Resampling.BILINEAR))
    canvas = Image.new("RGB", (sum(t.width for t in tiles), height), (255, 255, 255))
    left = 0
    for tile in tiles:
        canvas.paste(tile, (left, 0))
        left += tile.width
    return np.asarray(canvas)


def _to_input_pixels(head: str, result: Dict[str, np.ndarray], index: int, frame: tuple,
                     table: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One image's detections of a head, boxes in its own pixels."""
    from data_pipelines.decode import unletterbox  # pylint: disable=import-outside-toplevel  # TF

    scale_xy, pad_xy, size = frame
    category_ids = table.get("category_ids") or [-1] * len(table["names"])
    count = int(result["num_detections"][index])
    boxes = unletterbox(result["boxes"][index, :count], scale_xy, pad_xy, size).numpy()
    return [{"head": head, "class": table["names"][int(cls)],
             "category_id": int(category_ids[int(cls)]), "score": round(float(score), 4),
             "box_xyxy": [round(float(v), 1) for v in box]}
            for box, score, cls in zip(boxes, result["scores"][index, :count],
                                       result["classes"][index, :count])]


def predict_images(detector: Any, images: Sequence[np.ndarray], image_size: int,
                   classes: Dict[str, Dict[str, Any]], *, score_threshold: float = 0.3,
                   iou_threshold: float = 0.5,
                   max_detections: int = 100) -> Tuple[List[List[Dict[str, Any]]], Dict]:
    """Runs every head on a batch of images (one forward pass).

    Args:
        detector: the model.
        images: RGB uint8 `[H, W, 3]` arrays, any sizes.
        image_size: model input side.
        classes: per-head class table.
        score_threshold: minimum detection score kept.
        iou_threshold: NMS IoU threshold.
        max_detections: per detection head and image.

    Returns:
        `(detections, labels)`: per image, its detections `{head, class, category_id,
        score, box_xyxy}` in original pixels; per image-level head, its post-processed
        outputs for the batch (numpy, `probabilities`, `top_classes`/`top_scores` or
        `tags`), and per detection head `{"num_detections"}`.
    """
    # pylint: disable=import-outside-toplevel  # TensorFlow only when predicting
    import tensorflow as tf

    from data_pipelines.decode import letterbox
    from effdet_tf import nms_tf
    from train.compiled_call import inference

    framed, geometry = [], []
    for image in images:
        height, width = image.shape[:2]
        frame, scale_xy, pad_xy = letterbox(tf.constant(image), tf.constant([height, width]),
                                            image_size)
        framed.append(frame)
        geometry.append((scale_xy, pad_xy, [height, width]))
    outputs = inference(detector)(tf.stack(framed))
    found = nms_tf.postprocess(detector, outputs, score_threshold=score_threshold,
                               iou_threshold=iou_threshold, max_detections=max_detections)
    per_image: List[List[Dict[str, Any]]] = [[] for _ in images]
    labels: Dict[str, Dict[str, np.ndarray]] = {}
    for head, result in found.items():
        result = {k: np.asarray(v) for k, v in result.items()}
        labels[head] = {"num_detections": result["num_detections"]}
        for index, frame in enumerate(geometry):
            per_image[index] += _to_input_pixels(head, result, index, frame, classes[head])
    for spec in detector.head_specs:
        if spec.name not in found:
            out = detector.task_heads[spec.name].postprocess(outputs[spec.name])
            labels[spec.name] = {k: np.asarray(v) for k, v in out.items()}
    return per_image, labels


def detect_image(detector: Any, image: np.ndarray, image_size: int,
                 classes: Dict[str, Dict[str, Any]], **settings) -> List[Dict[str, Any]]:
    """Runs every detection head on one image (see `predict_images` for `settings`).

    Returns:
        Detections `{head, class, category_id, score, box_xyxy}` in original pixels.
    """
    return predict_images(detector, [image], image_size, classes, **settings)[0][0]


def _text_colour(fill: Sequence[int]) -> tuple:
    """Black or white, whichever reads better on `fill`."""
    luminance = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    return (0, 0, 0) if luminance > 150 else (255, 255, 255)


def draw(image: np.ndarray, detections: List[Dict[str, Any]], head_names: Sequence[str],
         label_text: Sequence[str] = ()) -> Image.Image:
    """Draws detections, one colour per head, a legend strip of the heads below and the
    image-level heads' labels under it.

    Each box is labelled `head:class score` on a filled background of its head's colour;
    the legend and the labels sit in a strip added under the image, so they never cover
    a detection.

    Args:
        image: RGB uint8.
        detections: from `predict_images`.
        head_names: heads in order (their colours).
        label_text: lines of the image-level heads (`train.predict_table.label_lines`).

    Returns:
        The annotated PIL image (taller than `image` by the strip).
    """
    picture = Image.fromarray(image).convert("RGB")
    size = max(12, round(max(picture.size) / 40))
    font = scalable_font(size)
    strip = (size + 10) * (1 + len(label_text))
    width = picture.width
    if label_text:  # wide enough for the longest line
        width = max(width, max(int(font.getlength(t)) for t in label_text) + 12)
    canvas = Image.new("RGB", (width, picture.height + strip), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    pen = ImageDraw.Draw(canvas)
    line = max(2, round(max(picture.size) / 300))
    colour = {h: HEAD_COLOURS[i % len(HEAD_COLOURS)] for i, h in enumerate(head_names)}
    for det in sorted(detections, key=lambda d: d["score"]):
        x1, y1, x2, y2 = det["box_xyxy"]
        fill = colour[det["head"]]
        pen.rectangle([x1, y1, x2, y2], outline=fill, width=line)
        text = f"{det['head']}:{det['class']} {det['score']:.2f}"
        left, top, right, bottom = pen.textbbox((0, 0), text, font=font)
        height = bottom - top + 4
        y_text = y1 - height if y1 - height >= 0 else y1
        x_text = min(x1, max(0.0, picture.width - (right - left) - 4))
        pen.rectangle([x_text, y_text, x_text + right - left + 4, y_text + height], fill=fill)
        pen.text((x_text + 2, y_text + 2 - top), text, fill=_text_colour(fill), font=font)
    x = 6
    y = picture.height + 5
    for head in head_names:
        pen.rectangle([x, y, x + size, y + size], fill=colour[head])
        pen.text((x + size + 4, y), head, fill=(0, 0, 0), font=font)
        x += size + 4 + int(pen.textlength(head, font=font)) + 14
    for line in label_text:
        y += size + 10
        pen.text((6, y), line, fill=(0, 0, 0), font=font)
    return canvas


def _inputs(args: Any) -> List[Tuple[str, str]]:
    """`(uuid, path)` of the images the command line names."""
    if args.table:
        image_dir = args.images_dir or os.path.join(os.path.dirname(args.table), "images")
        return table_inputs(args.table, image_dir, id_column=args.id_column, split=args.split)
    if not args.images:
        raise DataError("give image files or folders, or --table FILE")
    return image_inputs(args.images)


def _batches(items: Sequence[Any], size: int) -> List[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def main(argv: Optional[Sequence[str]] = None) -> int:  # pylint: disable=too-many-locals  # one CLI
    """CLI entry point."""
    parser = make_parser("python -m train.predict", description=__doc__)
    parser.add_argument("--run", required=True, help="run folder written by train.fit")
    parser.add_argument("images", nargs="*", help="image files or folders of images")
    parser.add_argument("--table", default=None,
                        help="a CSV or parquet table of image ids instead of images")
    parser.add_argument("--id-column", default="id", help="the id column of --table")
    parser.add_argument("--images-dir", default=None,
                        help="folder the --table ids are relative to (default: images/ "
                             "beside the table)")
    parser.add_argument("--split", default=None, help="only the --table rows of this split")
    parser.add_argument("--out", default=None, help="output folder (None: RUN/predictions)")
    parser.add_argument("--score", type=float, default=0.3, help="minimum score drawn")
    parser.add_argument("--weights", default="final", choices=("best", "last", "final"))
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    parser.add_argument("--draw", choices=("auto", "all", "none"), default="auto",
                        help="draw the predictions on the images (auto: image files named "
                             "on the command line, not folders or tables)")
    parser.add_argument("--compose", action="store_true",
                        help="paste all images side by side into one composite first")
    args = parser.parse_args(argv)
    inputs = _inputs(args)
    from train.run_dir import load_run  # pylint: disable=import-outside-toplevel  # heavy
    cfg, detector, classes = load_run(args.run, weights=args.weights)
    out_dir = args.out or os.path.join(args.run, "predictions")
    os.makedirs(out_dir, exist_ok=True)
    named = {p for p in args.images if os.path.isfile(p)}
    if args.compose:
        inputs = [("composite", "composite")]
        readers = {"composite": lambda: compose(args.images)}
        named = {"composite"}
    else:
        readers = {path: functools.partial(read_rgb, path) for _, path in inputs}
    kinds = {spec.name: spec.kind for spec in detector.head_specs}
    names = {head: entry["names"] for head, entry in classes.items()}
    report, rows, failed = {}, [], []
    with tqdm(total=len(inputs), desc="predict", unit="img", disable=None) as progress:
        for batch in _batches(inputs, max(1, args.batch_size)):
            images = []
            for uuid, path in batch:
                try:
                    images.append((uuid, path, readers[path]()))
                except DataError as err:  # one bad file does not stop the others
                    print(f"error: {err}", file=sys.stderr)
                    failed.append(path)
            progress.update(len(batch))
            if not images:
                continue
            found, labels = predict_images(
                detector, [image for _, _, image in images], cfg.data.image_size, classes,
                score_threshold=args.score, iou_threshold=cfg.eval.iou_threshold,
                max_detections=cfg.eval.max_detections)
            for index, (uuid, path, image) in enumerate(images):
                row = {"uuid": uuid, "file": path}
                for head in cfg.head_names:
                    row.update(head_columns(kinds[head], head, names[head], labels[head], index))
                rows.append(row)
                entry = {"detections": found[index]}
                if args.draw == "all" or (args.draw == "auto" and path in named):
                    drawn = os.path.join(out_dir, f"{uuid.replace('/', '_')}_pred.jpg")
                    draw(image, found[index], cfg.head_names,
                         label_lines(kinds, row, names)).save(drawn, quality=92)
                    entry["file"] = drawn
                report[uuid] = entry
    table = write_predictions(rows, os.path.join(out_dir, PREDICTIONS_FILE))
    with open(os.path.join(out_dir, "detections.json"), "w", encoding="utf-8") as stream:
        json.dump(report, stream, indent=1)
    drawn_count = sum("file" in e for e in report.values())
    print(f"{len(rows)} image(s): {table} (one row each), detections.json"
          + (f", {drawn_count} drawn image(s) *_pred.jpg" if drawn_count else "")
          + f" in {out_dir}")
    if failed:
        print(f"{len(failed)} of {len(inputs)} image(s) could not be read: "
              f"{', '.join(map(str, failed))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
