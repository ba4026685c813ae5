"""Run every head on images: `python -m train.predict --run RUN IMAGE [IMAGE ...]`.

Each image is written with every head's boxes, labels and scores drawn (one colour per
head), plus `detections.json` with the boxes in original image pixels. `--compose`
first pastes several images side by side into one (for example a fruits photo next to a
kitchen photo), so one picture holds objects of both datasets.
"""
import functools
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from effdet_tf.cli import make_parser, run_cli
from effdet_tf.errors import DataError

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


def detect_image(detector: Any, image: np.ndarray, image_size: int,
                 classes: Dict[str, Dict[str, Any]], *, score_threshold: float = 0.3,
                 iou_threshold: float = 0.5, max_detections: int = 100) -> List[Dict[str, Any]]:
    """Runs every head on one image.

    Args:
        detector: the detector.
        image: RGB uint8 `[H, W, 3]`.
        image_size: model input side.
        classes: per-head class table.
        score_threshold: minimum score kept.
        iou_threshold: NMS IoU threshold.
        max_detections: per head.

    Returns:
        Detections `{head, class, category_id, score, box_xyxy}` in original pixels.
    """
    # pylint: disable=import-outside-toplevel  # TensorFlow only when predicting
    import tensorflow as tf

    from data_pipelines.decode import letterbox, unletterbox
    from effdet_tf import nms_tf

    height, width = image.shape[:2]
    framed, scale_xy, pad_xy = letterbox(tf.constant(image), tf.constant([height, width]),
                                         image_size)
    out = nms_tf.detect(detector, framed[None], score_threshold=score_threshold,
                        iou_threshold=iou_threshold, max_detections=max_detections)
    found = []
    for head, result in out.items():
        count = int(np.asarray(result["num_detections"])[0])
        boxes = unletterbox(np.asarray(result["boxes"])[0, :count], scale_xy, pad_xy,
                            [height, width]).numpy()
        for box, score, cls in zip(boxes, np.asarray(result["scores"])[0, :count],
                                   np.asarray(result["classes"])[0, :count]):
            found.append({"head": head, "class": classes[head]["names"][int(cls)],
                          "category_id": int(classes[head]["category_ids"][int(cls)]),
                          "score": round(float(score), 4),
                          "box_xyxy": [round(float(v), 1) for v in box]})
    return found


def _font(size: int) -> ImageFont.ImageFont:
    """A scalable font of `size` px (Pillow's bundled one); the bitmap font if unavailable."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def _text_colour(fill: Sequence[int]) -> tuple:
    """Black or white, whichever reads better on `fill`."""
    luminance = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    return (0, 0, 0) if luminance > 150 else (255, 255, 255)


def draw(image: np.ndarray, detections: List[Dict[str, Any]],
         head_names: Sequence[str]) -> Image.Image:
    """Draws detections, one colour per head, and a legend strip of the heads below.

    Each box is labelled `head:class score` on a filled background of its head's colour;
    the legend sits in a strip added under the image, so it never covers a detection.

    Args:
        image: RGB uint8.
        detections: from `detect_image`.
        head_names: heads in order (their colours).

    Returns:
        The annotated PIL image (taller than `image` by the legend strip).
    """
    picture = Image.fromarray(image).convert("RGB")
    size = max(12, round(max(picture.size) / 40))
    font = _font(size)
    strip = size + 10
    canvas = Image.new("RGB", (picture.width, picture.height + strip), (255, 255, 255))
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
    return canvas


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point."""
    parser = make_parser("python -m train.predict", description=__doc__)
    parser.add_argument("--run", required=True, help="run folder written by train.fit")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", default=None, help="output folder (None: RUN/predictions)")
    parser.add_argument("--score", type=float, default=0.3, help="minimum score drawn")
    parser.add_argument("--weights", default="final", choices=("best", "last", "final"))
    parser.add_argument("--compose", action="store_true",
                        help="paste all images side by side into one composite first")
    args = parser.parse_args(argv)
    for path in args.images:
        if not os.path.isfile(path):
            raise DataError(f"{path}: image file does not exist")
    from train.run_dir import load_run  # pylint: disable=import-outside-toplevel  # heavy
    cfg, detector, classes = load_run(args.run, weights=args.weights)
    out_dir = args.out or os.path.join(args.run, "predictions")
    os.makedirs(out_dir, exist_ok=True)
    if args.compose:
        inputs = [("composite", args.images, lambda: compose(args.images))]
    else:
        inputs = [(os.path.splitext(os.path.basename(p))[0], p, functools.partial(read_rgb, p))
                  for p in args.images]
    report, failed = {}, []
    for stem, source, read in inputs:
        try:
            image = read()
        except DataError as err:  # one bad file does not stop the others
            print(f"error: {err}", file=sys.stderr)
            failed.append(source)
            continue
        found = detect_image(detector, image, cfg.data.image_size, classes,
                             score_threshold=args.score, iou_threshold=cfg.eval.iou_threshold,
                             max_detections=cfg.eval.max_detections)
        path = os.path.join(out_dir, f"{stem}_pred.jpg")
        draw(image, found, cfg.head_names).save(path, quality=92)
        report[stem] = {"file": path, "detections": found}
        per_head = {h: sum(d["head"] == h for d in found) for h in cfg.head_names}
        print(f"{path}: " + ", ".join(f"{h} {n}" for h, n in per_head.items()))
    with open(os.path.join(out_dir, "detections.json"), "w", encoding="utf-8") as stream:
        json.dump(report, stream, indent=1)
    if failed:
        print(f"{len(failed)} of {len(inputs)} image(s) could not be read: "
              f"{', '.join(map(str, failed))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
