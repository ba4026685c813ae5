"""EfficientDet anchors (numpy constants): 9 per location on levels P3-P7 by default,
3 scales times the aspect ratios of the head."""
import math
from typing import Any, Sequence, Tuple

import numpy as np

from effdet_tf.errors import ConfigError

MIN_LEVEL = 3
MAX_LEVEL = 7
NUM_SCALES = 3
ASPECT_RATIOS: Tuple[float, ...] = (1.0, 2.0, 0.5)
ANCHOR_SCALE = 4.0
NUM_ANCHORS_PER_LOCATION = NUM_SCALES * len(ASPECT_RATIOS)


def check_image_size(image_size: int, max_level: int = MAX_LEVEL) -> int:
    """Checks that an image size is a positive multiple of the coarsest stride.

    Args:
        image_size: side of the square model input, in pixels.
        max_level: coarsest pyramid level; the size must divide by `2**max_level`.

    Returns:
        The size, as an int.

    Raises:
        ConfigError: the size is not a positive multiple of `2**max_level`.
    """
    stride = 2 ** max_level
    if int(image_size) != image_size or image_size <= 0 or image_size % stride:
        raise ConfigError(
            f"image_size must be a positive multiple of {stride} (the P{max_level} stride), "
            f"got {image_size}")
    return int(image_size)


def check_aspect_ratios(ratios: Any, where: str = "aspect_ratios") -> Tuple[float, ...]:
    """Checks anchor aspect ratios (width / height): a non-empty list of distinct positive
    numbers.

    Args:
        ratios: the value to check (a list or tuple).
        where: what the value is, for the error message (e.g. `model.anchor_aspect_ratios`).

    Returns:
        The ratios as a tuple of floats, in the given order (the anchors' order).

    Raises:
        ConfigError: not a list, empty, a ratio that is not a positive finite number, or a
            ratio given twice.

    Example:
        >>> check_aspect_ratios([1, 2, 0.5, 4, 0.25])
        (1.0, 2.0, 0.5, 4.0, 0.25)
    """
    if isinstance(ratios, (str, bytes)) or not isinstance(ratios, Sequence) or not ratios:
        raise ConfigError(f"{where}: expected a non-empty list of width / height ratios "
                          f"such as [1, 2, 0.5], got {ratios!r}")
    values = []
    for value in ratios:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{where}: {value!r} is not a positive number (a width / "
                              "height ratio)")
        values.append(float(value))
    if len(set(values)) != len(values):
        raise ConfigError(f"{where}: a ratio is given twice in {list(values)}")
    return tuple(values)


def level_shapes(image_size: int, min_level: int = MIN_LEVEL,
                 max_level: int = MAX_LEVEL) -> list:
    """Returns the feature map side of every pyramid level.

    Args:
        image_size: side of the square model input.
        min_level: finest level.
        max_level: coarsest level.

    Returns:
        A list of ints, `image_size / 2**level` for each level.
    """
    check_image_size(image_size, max_level)
    return [image_size // 2 ** level for level in range(min_level, max_level + 1)]


def generate_anchors(image_size: int, *, min_level: int = MIN_LEVEL,
                     max_level: int = MAX_LEVEL, num_scales: int = NUM_SCALES,
                     aspect_ratios: Sequence[float] = ASPECT_RATIOS,
                     anchor_scale: float = ANCHOR_SCALE) -> np.ndarray:
    """Generates the anchors of a square image, in the order of the model outputs.

    Order: levels `min_level..max_level`, then rows (y), then columns (x), then the
    anchors of one location (scales outer, aspect ratios inner). An anchor of level `l`
    with scale `s` and ratio `r` (width / height) is centred on
    `((x + 0.5) * 2**l, (y + 0.5) * 2**l)` and has area `(anchor_scale * 2**l * s)**2`.

    Args:
        image_size: side of the square model input, a multiple of `2**max_level`.
        min_level: finest level.
        max_level: coarsest level.
        num_scales: scales per octave, `2**(i / num_scales)`.
        aspect_ratios: width / height ratios.
        anchor_scale: base anchor size in units of the level stride.

    Returns:
        float32 `[A, 4]` boxes `x1, y1, x2, y2` in pixels.

    Raises:
        ConfigError: the image size is not a multiple of the coarsest stride.

    Example:
        >>> generate_anchors(512).shape
        (49104, 4)
    """
    check_image_size(image_size, max_level)
    per_level = []
    for level in range(min_level, max_level + 1):
        stride = 2.0 ** level
        side = image_size // 2 ** level
        centres = (np.arange(side, dtype=np.float64) + 0.5) * stride
        cy, cx = np.meshgrid(centres, centres, indexing="ij")
        sizes = []
        for scale_index in range(num_scales):
            base = anchor_scale * stride * 2.0 ** (scale_index / num_scales)
            for ratio in aspect_ratios:
                sizes.append((base * np.sqrt(ratio), base / np.sqrt(ratio)))
        half = np.asarray(sizes) / 2.0                      # [K, 2] (w/2, h/2)
        cx = cx.reshape(-1, 1)
        cy = cy.reshape(-1, 1)
        boxes = np.stack([cx - half[:, 0], cy - half[:, 1],
                          cx + half[:, 0], cy + half[:, 1]], axis=-1)  # [HW, K, 4]
        per_level.append(boxes.reshape(-1, 4))
    return np.concatenate(per_level, axis=0).astype(np.float32)


def num_anchors(image_size: int, min_level: int = MIN_LEVEL, max_level: int = MAX_LEVEL) -> int:
    """Returns the number of anchors of a square image.

    Args:
        image_size: side of the square model input.
        min_level: finest level.
        max_level: coarsest level.

    Returns:
        `9 * sum(side_l**2)`; 49,104 at 512.
    """
    return NUM_ANCHORS_PER_LOCATION * sum(
        side * side for side in level_shapes(image_size, min_level, max_level))
