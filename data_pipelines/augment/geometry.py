"""Geometric augmentation: tiled axis-aligned resampling, flip and darknet jitter.

Every geometric step here is the same operation, "place up to four tiles": the output
image is split at a centre ``(cx, cy)`` into four quadrants (tile 0 top-left, 1 top-right,
2 bottom-left, 3 bottom-right) and each quadrant shows one batch example mapped through
``out = scale * src + offset`` per axis (a negative x scale mirrors). Plain jitter/flip
is one tile covering the whole image (centre at ``(S, S)``); Mosaic is four. Doing all
of it in one resampling pass keeps the image sharp (one interpolation) and fast.

Pixels are resampled bilinearly with one flat ``gather`` per neighbour over the batch, so
the whole step is a handful of element-wise ops and four gathers; it compiles under XLA.
"""
import tensorflow as tf

from data_pipelines.augment import boxes as box_ops
from data_pipelines.augment import labels
from data_pipelines.augment import rng

FILL_VALUE = 114.0
_MIN_TILE_SCALE = 1e-2


def tile_windows(centre_x: tf.Tensor, centre_y: tf.Tensor, image_size: int) -> tf.Tensor:
    """Returns the four quadrant windows of each example.

    Args:
        centre_x: float32 ``[B]``.
        centre_y: float32 ``[B]``.
        image_size: the image side ``S``.

    Returns:
        float32 ``[B, 4, 4]`` xyxy windows, tiles in the order TL, TR, BL, BR.
    """
    zero = tf.zeros_like(centre_x)
    full = tf.fill(tf.shape(centre_x), tf.cast(image_size, tf.float32))
    x0 = tf.stack([zero, centre_x, zero, centre_x], axis=1)
    x1 = tf.stack([centre_x, full, centre_x, full], axis=1)
    y0 = tf.stack([zero, zero, centre_y, centre_y], axis=1)
    y1 = tf.stack([centre_y, centre_y, full, full], axis=1)
    return tf.stack([x0, y0, x1, y1], axis=-1)


def sample_tile_transforms(seed: tf.Tensor, windows: tf.Tensor, image_size: int,
                           jitter: float, flip: float) -> tuple[tf.Tensor, ...]:
    """Samples the mapping of each tile: darknet jitter crop, cover-fit, offset, flip.

    The source image is cropped darknet-style (each side moved in or out by up to
    ``jitter * S``), scaled so that it covers its window (a whole-image window keeps the
    crop at full size, like darknet), placed at a random offset inside the window's
    slack and mirrored with probability ``flip``.

    Args:
        seed: int32 ``[2]``.
        windows: float32 ``[B, 4, 4]`` tile windows.
        image_size: the image side ``S``.
        jitter: darknet jitter (fraction of the side).
        flip: chance of a horizontal flip, per tile.

    Returns:
        ``(scale_x, offset_x, scale_y, offset_y)``, each float32 ``[B, 4]``.
    """
    size = float(image_size)
    shape = tf.shape(windows)[:2]
    seeds = rng.split_seed(seed, 4)
    sides = rng.uniform(tf.concat([[4], shape], 0), seeds[0],
                                        -jitter * size, jitter * size)
    pad_left, pad_right, pad_top, pad_bottom = tf.unstack(sides)
    place = rng.uniform(tf.concat([[2], shape], 0), seeds[1])
    mirror = rng.uniform(shape, seeds[2]) < flip
    width = windows[..., 2] - windows[..., 0]
    height = windows[..., 3] - windows[..., 1]
    extent = tf.maximum(tf.maximum(width, height), _MIN_TILE_SCALE * size)

    def _axis(low, high, cut_low, cut_high, where):
        scale = extent / (size - cut_low - cut_high)
        slack = high - extent
        start = tf.minimum(slack, low) + where * tf.abs(slack - low)
        return scale, start - scale * cut_low

    scale_x, offset_x = _axis(windows[..., 0], windows[..., 2], pad_left, pad_right, place[0])
    scale_y, offset_y = _axis(windows[..., 1], windows[..., 3], pad_top, pad_bottom, place[1])
    # Mirror inside the placed extent: x -> (2 * start + extent) - x.
    mirrored_offset = 2.0 * (offset_x + scale_x * pad_left) + extent - offset_x
    scale_x = tf.where(mirror, -scale_x, scale_x)
    offset_x = tf.where(mirror, mirrored_offset, offset_x)
    return scale_x, offset_x, scale_y, offset_y


def _axis_taps(scale, offset, size):
    """Bilinear taps along one axis for every tile: ``[B, 4, S]`` each."""
    centre = tf.range(size, dtype=tf.float32) + 0.5
    src = (centre - offset[..., tf.newaxis]) / scale[..., tf.newaxis]
    inside = (src >= 0.0) & (src <= float(size))
    src = src - 0.5
    low = tf.floor(src)
    weight = src - low
    low = tf.cast(low, tf.int32)
    first = tf.clip_by_value(low, 0, size - 1)
    second = tf.clip_by_value(low + 1, 0, size - 1)
    return first, second, weight, inside


def _pick(first_half, tiles_a, tiles_b):
    """Per position, the value of tile ``a`` where ``first_half`` else of tile ``b``."""
    return tf.where(first_half, tiles_a, tiles_b)


def _pixel_taps(sources, transforms, centre_x, centre_y, size):
    """Per output pixel: flat indices of the 4 bilinear taps, weights and inside-mask."""
    scale_x, offset_x, scale_y, offset_y = transforms
    x_first, x_second, x_weight, x_inside = _axis_taps(scale_x, offset_x, size)
    y_first, y_second, y_weight, y_inside = _axis_taps(scale_y, offset_y, size)
    base = (sources * size * size)[..., tf.newaxis]
    centre = tf.range(size, dtype=tf.float32) + 0.5
    left = (centre < centre_x[:, tf.newaxis])[:, tf.newaxis, :]  # [B, 1, S] over x
    top = (centre < centre_y[:, tf.newaxis])[:, :, tf.newaxis]  # [B, S, 1] over y

    def rows(values):
        # A row-dependent value per pixel [B, S(y), S(x)]: tile 0/2 left, 1/3 right.
        by_row_left = _pick(top, values[:, 0, :, tf.newaxis], values[:, 2, :, tf.newaxis])
        by_row_right = _pick(top, values[:, 1, :, tf.newaxis], values[:, 3, :, tf.newaxis])
        return _pick(left, by_row_left, by_row_right)

    def cols(values):
        by_col_top = _pick(left, values[:, 0, tf.newaxis, :], values[:, 1, tf.newaxis, :])
        by_col_bottom = _pick(left, values[:, 2, tf.newaxis, :], values[:, 3, tf.newaxis, :])
        return _pick(top, by_col_top, by_col_bottom)

    row_a = rows(base + y_first * size)
    row_b = rows(base + y_second * size)
    col_a, col_b = cols(x_first), cols(x_second)
    taps = (row_a + col_a, row_a + col_b, row_b + col_a, row_b + col_b)
    weights = (rows(y_weight)[..., tf.newaxis], cols(x_weight)[..., tf.newaxis])
    return taps, weights, rows(y_inside) & cols(x_inside)


def resample_tiles(images: tf.Tensor, sources: tf.Tensor, transforms: tuple[tf.Tensor, ...],
                   centre_x: tf.Tensor, centre_y: tf.Tensor,
                   fill: float = FILL_VALUE) -> tf.Tensor:
    """Builds each output image from four mapped tiles of batch examples.

    Args:
        images: uint8 ``[B, S, S, 3]``.
        sources: int32 ``[B, 4]``, the example each tile shows.
        transforms: ``(scale_x, offset_x, scale_y, offset_y)``, float32 ``[B, 4]`` each,
            mapping source pixels to output pixels (``out = scale * src + offset``).
        centre_x: float32 ``[B]``, the quadrant split along x (``S`` for one tile).
        centre_y: float32 ``[B]``, the quadrant split along y.
        fill: value of pixels that map outside their source image.

    Returns:
        uint8 ``[B, S, S, 3]``.
    """
    taps, (weight_y, weight_x), inside = _pixel_taps(sources, transforms, centre_x, centre_y,
                                                     images.shape[1])
    flat = tf.reshape(images, [-1, images.shape[-1]])
    top_left, top_right, bottom_left, bottom_right = (
        tf.cast(tf.gather(flat, index), tf.float32) for index in taps)
    upper = top_left + (top_right - top_left) * weight_x
    lower = bottom_left + (bottom_right - bottom_left) * weight_x
    out = upper + (lower - upper) * weight_y
    out = tf.where(inside[..., tf.newaxis], out, fill)
    return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)


def tile_boxes(boxes: tf.Tensor, classes: tf.Tensor, sources: tf.Tensor,
               transforms: tuple[tf.Tensor, ...], windows: tf.Tensor, min_visible: float,
               min_box_size: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Maps the boxes of each tile's source, clips them to the tile, filters and packs.

    Args:
        boxes: float32 ``[B, M, 4]``.
        classes: int32 ``[B, M]``.
        sources: int32 ``[B, 4]``.
        transforms: as in :func:`resample_tiles`.
        windows: float32 ``[B, 4, 4]`` tile windows.
        min_visible: least fraction of a mapped box that must stay inside its tile.
        min_box_size: least width and height in pixels.

    Returns:
        ``(boxes [B, M, 4], classes [B, M])``, -1 padded.
    """
    max_boxes = boxes.shape[1]
    src_boxes = tf.gather(boxes, sources)  # [B, 4, M, 4]
    src_classes = tf.gather(classes, sources)
    scale_x, offset_x, scale_y, offset_y = (t[..., tf.newaxis] for t in transforms)
    mapped = box_ops.transform_boxes(src_boxes, scale_x, offset_x, scale_y, offset_y)
    clipped = box_ops.clip_boxes(mapped, windows[:, :, tf.newaxis, :])
    keep = box_ops.keep_boxes(clipped, box_ops.box_area(mapped),
                              box_ops.valid_boxes(src_boxes, src_classes),
                              min_visible, min_box_size)
    flat_shape = [-1, 4 * max_boxes]
    return box_ops.pack_boxes(tf.reshape(clipped, flat_shape + [4]),
                              tf.reshape(src_classes, flat_shape),
                              tf.reshape(keep, flat_shape), max_boxes)


def place_tiles(batch: dict, sources: tf.Tensor, centre_x: tf.Tensor, centre_y: tf.Tensor,
                seed: tf.Tensor, *, jitter: float, flip: float, min_visible: float,
                min_box_size: float) -> dict:
    """Places four jittered, possibly mirrored tiles per example (pixels and boxes).

    Args:
        batch: raw batch (``images``, ``boxes``, ``classes``, ...).
        sources: int32 ``[B, 4]``, the example each tile shows.
        centre_x: float32 ``[B]``; ``S`` with ``centre_y = S`` makes tile 0 the whole image.
        centre_y: float32 ``[B]``.
        seed: int32 ``[2]``.
        jitter: darknet jitter per tile.
        flip: chance of a horizontal flip per tile.
        min_visible: least visible fraction of a box.
        min_box_size: least box width and height in pixels.

    Returns:
        The batch with new ``images``, ``boxes`` and ``classes``, and image-level labels
        mixed by the area of each tile (``labels.mix_labels``).
    """
    size = batch["images"].shape[1]
    windows = tile_windows(centre_x, centre_y, size)
    transforms = sample_tile_transforms(seed, windows, size, jitter, flip)
    images = resample_tiles(batch["images"], sources, transforms, centre_x, centre_y)
    boxes, classes = tile_boxes(batch["boxes"], batch["classes"], sources, transforms,
                                windows, min_visible, min_box_size)
    out = {**batch, "images": images, "boxes": boxes, "classes": classes}
    # Image-level labels by area: each tile covers its whole window.
    area = (windows[..., 2] - windows[..., 0]) * (windows[..., 3] - windows[..., 1])
    out.update(labels.mix_labels(batch, sources, area / float(size * size)))
    return out


def _single_tile(batch: dict, seed: tf.Tensor, jitter: float, flip: float,
                 min_visible: float, min_box_size: float) -> dict:
    """Jitter and/or flip every example on its own (one tile per image)."""
    count = tf.shape(batch["dataset_id"])[0]
    own = tf.range(count, dtype=tf.int32)
    sources = tf.tile(own[:, tf.newaxis], [1, 4])
    centre = tf.fill([count], float(batch["images"].shape[1]))
    return place_tiles(batch, sources, centre, centre, seed, jitter=jitter, flip=flip,
                       min_visible=min_visible, min_box_size=min_box_size)


def random_flip(batch: dict, seed: tf.Tensor, prob: float = 0.5, *,
                min_visible: float = 0.25, min_box_size: float = 2.0) -> dict:
    """Mirrors each example horizontally with probability ``prob``.

    Args:
        batch: raw batch.
        seed: int32 ``[2]``.
        prob: chance per example.
        min_visible: least visible fraction of a box.
        min_box_size: least box width and height in pixels.

    Returns:
        The augmented raw batch.
    """
    return _single_tile(batch, seed, 0.0, prob, min_visible, min_box_size)


def random_jitter(batch: dict, seed: tf.Tensor, jitter: float = 0.3, *,
                  min_visible: float = 0.25, min_box_size: float = 2.0) -> dict:
    """Darknet jitter: crops/pads each side by up to ``jitter * S`` and resizes back.

    Args:
        batch: raw batch.
        seed: int32 ``[2]``.
        jitter: fraction of the side each edge may move.
        min_visible: least visible fraction of a box.
        min_box_size: least box width and height in pixels.

    Returns:
        The augmented raw batch.
    """
    return _single_tile(batch, seed, jitter, 0.0, min_visible, min_box_size)
