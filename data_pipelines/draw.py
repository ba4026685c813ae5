"""Drawing raw batches (images, boxes, class names) into PNG grids with PIL."""
import colorsys
import math
from typing import Mapping, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def scalable_font(size: int) -> ImageFont.ImageFont:
    """Pillow's scalable default font at `size` px (the bitmap one on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def palette(count: int) -> Sequence[Tuple[int, int, int]]:
    """`count` well separated RGB colours.

    Args:
        count: number of colours.

    Returns:
        A list of `(r, g, b)` tuples.
    """
    out = []
    for i in range(max(count, 1)):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.85, 1.0)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def draw_boxes(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray,
               class_names: Sequence[str]) -> Image.Image:
    """Draws xyxy boxes with class names onto an image (padding rows, class -1, skipped).

    Args:
        image: uint8 `[H, W, 3]`.
        boxes: `[M, 4]` xyxy pixels.
        classes: `[M]` class indices, -1 for padding.
        class_names: name of each class index.

    Returns:
        A new PIL image.
    """
    img = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
    canvas = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    colours = palette(len(class_names))
    for box, cls in zip(np.asarray(boxes), np.asarray(classes)):
        if cls < 0:
            continue
        colour = colours[int(cls) % len(colours)]
        x1, y1, x2, y2 = (float(v) for v in box)
        canvas.rectangle([x1, y1, x2, y2], outline=colour, width=2)
        label = class_names[cls] if cls < len(class_names) else str(int(cls))
        left, top, right, bottom = canvas.textbbox((x1, y1), label, font=font)
        text_y = max(0.0, y1 - (bottom - top) - 2)
        canvas.rectangle([left, text_y, right + 2, text_y + (bottom - top) + 2], fill=colour)
        canvas.text((x1 + 1, text_y), label, fill=(0, 0, 0), font=font)
    return img


def batch_grid(batch: Mapping[str, np.ndarray], class_names: Sequence[Sequence[str]], *,
               tile: int = 256, cols: int = 0) -> Image.Image:
    """Draws a raw batch as a grid of annotated tiles.

    Args:
        batch: numpy raw batch (`images`, `boxes`, `classes`, `dataset_id`).
        class_names: class names per dataset id.
        tile: side of each tile in pixels (images are scaled to it before drawing).
        cols: tiles per row (about square when 0).

    Returns:
        The grid image.
    """
    images = np.asarray(batch["images"])
    count = images.shape[0]
    cols = cols or math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    grid = Image.new("RGB", (cols * tile, rows * tile), (40, 40, 40))
    for i in range(count):
        names = class_names[int(batch["dataset_id"][i])]
        small = Image.fromarray(images[i].astype(np.uint8)).convert("RGB")
        small = small.resize((tile, tile), Image.Resampling.BILINEAR)
        factor = np.array([tile / images.shape[2], tile / images.shape[1]] * 2, np.float32)
        boxes = np.where(batch["boxes"][i] >= 0, batch["boxes"][i] * factor, -1.0)
        drawn = draw_boxes(np.asarray(small), boxes, batch["classes"][i], names)
        grid.paste(drawn, ((i % cols) * tile, (i // cols) * tile))
    return grid
