"""CutMix and MixUp with boxes, partners from the same dataset.

CutMix pastes a rectangle of a partner into the example: the partner's boxes clipped to
the rectangle are added, the example's boxes lose the covered part (a box covered across
its whole height or width is cut back to its visible side) and are dropped when less than
``min_visible`` of their area stays in view. MixUp blends two images 50/50 (darknet) and
keeps the union of their boxes, the example's first.
"""
import tensorflow as tf

from data_pipelines.augment import boxes as box_ops
from data_pipelines.augment import labels
from data_pipelines.augment import rng
from data_pipelines.augment.partners import same_dataset_partners


def _partner(dataset_id, seed, prob):
    """A same-dataset partner per example and whether to mix (never with itself)."""
    seeds = rng.split_seed(seed, 2)
    partner = same_dataset_partners(dataset_id, seeds[0], 1)[:, 0]
    count = tf.shape(dataset_id)[0]
    apply = rng.uniform([count], seeds[1]) < prob
    apply &= tf.not_equal(partner, tf.range(count, dtype=tf.int32))
    return partner, apply


def sample_cut_rectangles(seed: tf.Tensor, count: tf.Tensor, image_size: int) -> tf.Tensor:
    """Samples CutMix rectangles (paper recipe: side ``S * sqrt(1 - lambda)``, uniform centre).

    Args:
        seed: int32 ``[2]``.
        count: number of rectangles ``B``.
        image_size: the image side ``S``.

    Returns:
        float32 ``[B, 4]`` xyxy with integer corners, clipped to the image.
    """
    size = float(image_size)
    draws = rng.uniform([3, count], seed)
    side = size * tf.sqrt(1.0 - draws[0])
    centre = draws[1:] * size
    half = side / 2.0
    rect = tf.stack([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half], -1)
    return tf.clip_by_value(tf.round(rect), 0.0, size)


def paste_rectangles(images: tf.Tensor, partner: tf.Tensor, rect: tf.Tensor) -> tf.Tensor:
    """Copies ``rect`` of image ``partner[b]`` into image ``b``, for every ``b``.

    One flat per-pixel gather: under XLA, ``where(mask, gather(images, partner), images)``
    made XLA recompute the producer of ``images`` (the fused resampling) several times
    over (measured: 450 ms instead of 15 ms at batch 16, 512 px).

    Args:
        images: uint8 ``[B, S, S, C]``.
        partner: int32 ``[B]``.
        rect: float32 ``[B, 4]`` xyxy with integer corners (empty: nothing pasted).

    Returns:
        uint8 ``[B, S, S, C]``.
    """
    count = tf.shape(partner)[0]
    centre = tf.range(images.shape[1], dtype=tf.float32) + 0.5
    in_x = (centre >= rect[:, 0:1]) & (centre < rect[:, 2:3])  # [B, S]
    in_y = (centre >= rect[:, 1:2]) & (centre < rect[:, 3:4])
    mask = in_y[:, :, tf.newaxis] & in_x[:, tf.newaxis, :]
    source = tf.where(mask, partner[:, tf.newaxis, tf.newaxis],
                      tf.range(count, dtype=tf.int32)[:, tf.newaxis, tf.newaxis])
    return gather_pixels(images, source)


def gather_pixels(images: tf.Tensor, source: tf.Tensor) -> tf.Tensor:
    """Per output pixel, the same pixel of image ``source[b, y, x]`` (one flat gather).

    Args:
        images: ``[B, S, S, C]``.
        source: int32 ``[B, S, S]`` (or broadcastable, e.g. ``[B, 1, 1]``).

    Returns:
        ``[B, S, S, C]``, same dtype as ``images``.
    """
    size = images.shape[1]
    pixel = tf.reshape(tf.range(size * size, dtype=tf.int32), [1, size, size])
    return tf.gather(tf.reshape(images, [-1, images.shape[-1]]), source * (size * size) + pixel)


def occlude_boxes(boxes: tf.Tensor, rect: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Removes a rectangle from boxes: the boxes cut back where possible, and the area seen.

    Args:
        boxes: float32 ``[B, M, 4]``.
        rect: float32 ``[B, 4]`` occluding rectangle per example.

    Returns:
        ``(boxes [B, M, 4], visible_area [B, M])``.
    """
    rect = rect[:, tf.newaxis, :]
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    rx1, ry1, rx2, ry2 = tf.unstack(tf.broadcast_to(rect, tf.shape(boxes)), axis=-1)
    covered = box_ops.box_area(box_ops.clip_boxes(boxes, rect))
    visible_area = box_ops.box_area(boxes) - covered
    # "Spans" allows less than a pixel left over: the rectangle has integer corners.
    spans_y = (ry1 < y1 + 1.0) & (ry2 > y2 - 1.0) & (covered > 0.0)
    spans_x = (rx1 < x1 + 1.0) & (rx2 > x2 - 1.0) & (covered > 0.0)
    new_x1 = tf.where(spans_y & (rx1 < x1 + 1.0), tf.maximum(x1, rx2), x1)
    new_x2 = tf.where(spans_y & (rx2 > x2 - 1.0), tf.minimum(x2, rx1), x2)
    new_y1 = tf.where(spans_x & (ry1 < y1 + 1.0), tf.maximum(y1, ry2), y1)
    new_y2 = tf.where(spans_x & (ry2 > y2 - 1.0), tf.minimum(y2, ry1), y2)
    return tf.stack([new_x1, new_y1, new_x2, new_y2], axis=-1), visible_area


def random_cutmix(batch: dict, seed: tf.Tensor, prob: float = 0.3, *,
                  min_visible: float = 0.25, min_box_size: float = 2.0) -> dict:
    """CutMix with boxes, each example with probability ``prob``.

    Args:
        batch: raw batch (``images``, ``boxes``, ``classes``, ``dataset_id``).
        seed: int32 ``[2]`` stateless seed.
        prob: chance per example.
        min_visible: least visible fraction of a box.
        min_box_size: least box width and height in pixels.

    Returns:
        The augmented raw batch, same keys, shapes and dtypes; image-level labels mixed
        by area (the pasted rectangle's share of the frame goes to the partner's labels).
    """
    images, boxes, classes = batch["images"], batch["boxes"], batch["classes"]
    size, max_boxes = images.shape[1], boxes.shape[1]
    seeds = rng.split_seed(seed, 2)
    partner, apply = _partner(batch["dataset_id"], seeds[0], prob)
    count = tf.shape(partner)[0]
    rect = sample_cut_rectangles(seeds[1], count, size)
    rect = tf.where(apply[:, tf.newaxis], rect, 0.0)

    images = paste_rectangles(images, partner, rect)

    valid = box_ops.valid_boxes(boxes, classes)
    own_boxes, visible_area = occlude_boxes(boxes, rect)
    own_keep = box_ops.keep_boxes(own_boxes, box_ops.box_area(boxes), valid, min_visible,
                                  min_box_size, visible_area=visible_area)
    pasted = tf.gather(boxes, partner)
    pasted_classes = tf.gather(classes, partner)
    pasted_clipped = box_ops.clip_boxes(pasted, rect[:, tf.newaxis, :])
    pasted_keep = box_ops.keep_boxes(pasted_clipped, box_ops.box_area(pasted),
                                     box_ops.valid_boxes(pasted, pasted_classes),
                                     min_visible, min_box_size)
    pasted_keep &= apply[:, tf.newaxis]
    boxes, classes = box_ops.pack_boxes(
        tf.concat([own_boxes, pasted_clipped], axis=1),
        tf.concat([classes, pasted_classes], axis=1),
        tf.concat([own_keep, pasted_keep], axis=1), max_boxes)
    out = {**batch, "images": images, "boxes": boxes, "classes": classes}
    pasted_share = box_ops.box_area(rect) / float(size * size)
    out.update(labels.mix_labels(batch, tf.stack([tf.range(count, dtype=tf.int32), partner], 1),
                                 labels.pair_weights(1.0 - pasted_share)))
    return out


def random_mixup(batch: dict, seed: tf.Tensor, prob: float = 0.0) -> dict:
    """MixUp: blends each example 50/50 with a same-dataset partner with chance ``prob``.

    Args:
        batch: raw batch (``images``, ``boxes``, ``classes``, ``dataset_id``).
        seed: int32 ``[2]`` stateless seed.
        prob: chance per example.

    Returns:
        The augmented raw batch; boxes are the union (the example's first, up to ``M``),
        image-level labels blended 50/50 like the pixels.
    """
    images, boxes, classes = batch["images"], batch["boxes"], batch["classes"]
    partner, apply = _partner(batch["dataset_id"], seed, prob)
    # One flat gather of both images of a pair. Known cost: under XLA on the CPU, MixUp
    # after the resampling pass adds about 0.8 s per batch of 16 at 512 px (XLA fuses the
    # resampling into this gather); whole-image gathers were no faster. Off by default.
    own = tf.range(tf.shape(partner)[0], dtype=tf.int32)
    pair = tf.stack([own, tf.where(apply, partner, own)], axis=-1)  # [B, 2]
    size = images.shape[1]
    pixel = tf.reshape(tf.range(size * size, dtype=tf.int32), [1, size, size, 1])
    index = pair[:, tf.newaxis, tf.newaxis, :] * (size * size) + pixel
    both = tf.gather(tf.reshape(images, [-1, images.shape[-1]]), index)  # [B, S, S, 2, C]
    images = tf.cast(tf.round(tf.reduce_mean(tf.cast(both, tf.float32), axis=-2)), tf.uint8)
    other_classes = tf.gather(classes, partner)
    other_keep = box_ops.valid_boxes(tf.gather(boxes, partner), other_classes)
    boxes, classes = box_ops.pack_boxes(
        tf.concat([boxes, tf.gather(boxes, partner)], axis=1),
        tf.concat([classes, other_classes], axis=1),
        tf.concat([box_ops.valid_boxes(boxes, classes), other_keep & apply[:, tf.newaxis]],
                  axis=1), boxes.shape[1])
    out = {**batch, "images": images, "boxes": boxes, "classes": classes}
    out.update(labels.mix_labels(batch, pair, labels.pair_weights(tf.where(apply, 0.5, 1.0))))
    return out
