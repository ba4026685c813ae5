"""Batched box helpers for augmentation: transform, clip, filter and re-pack.

Boxes are float32 ``[..., 4]`` xyxy in pixels; padding rows are ``-1`` in both boxes
and classes. Every function works on whole batches and compiles under XLA.
"""
import tensorflow as tf

PAD = -1.0


def valid_boxes(boxes: tf.Tensor, classes: tf.Tensor) -> tf.Tensor:
    """Returns which rows hold a real box (class >= 0 and positive width and height).

    Args:
        boxes: float32 ``[..., M, 4]`` xyxy.
        classes: int32 ``[..., M]``.

    Returns:
        bool ``[..., M]``.
    """
    return (classes >= 0) & (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])


def box_area(boxes: tf.Tensor) -> tf.Tensor:
    """Returns the area of xyxy boxes, zero for inverted ones.

    Args:
        boxes: float32 ``[..., 4]``.

    Returns:
        float32 ``[...]``.
    """
    w = tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    h = tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return w * h


def transform_boxes(boxes: tf.Tensor, scale_x: tf.Tensor, offset_x: tf.Tensor,
                    scale_y: tf.Tensor, offset_y: tf.Tensor) -> tf.Tensor:
    """Maps boxes through ``x' = scale_x * x + offset_x`` (same for y).

    A negative scale mirrors the axis; the corners are re-ordered so x1 <= x2.

    Args:
        boxes: float32 ``[..., 4]``.
        scale_x: float32 broadcastable to ``[...]``.
        offset_x: float32 broadcastable to ``[...]``.
        scale_y: float32 broadcastable to ``[...]``.
        offset_y: float32 broadcastable to ``[...]``.

    Returns:
        float32 ``[..., 4]`` xyxy.
    """
    xa = boxes[..., 0] * scale_x + offset_x
    xb = boxes[..., 2] * scale_x + offset_x
    ya = boxes[..., 1] * scale_y + offset_y
    yb = boxes[..., 3] * scale_y + offset_y
    return tf.stack([tf.minimum(xa, xb), tf.minimum(ya, yb),
                     tf.maximum(xa, xb), tf.maximum(ya, yb)], axis=-1)


def clip_boxes(boxes: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    """Clips boxes to a window.

    Args:
        boxes: float32 ``[..., 4]``.
        window: float32 xyxy broadcastable to ``[..., 4]``.

    Returns:
        float32 ``[..., 4]``; boxes outside the window get zero width or height.
    """
    window = tf.broadcast_to(tf.cast(window, boxes.dtype), tf.shape(boxes))
    x1 = tf.clip_by_value(boxes[..., 0], window[..., 0], window[..., 2])
    y1 = tf.clip_by_value(boxes[..., 1], window[..., 1], window[..., 3])
    x2 = tf.clip_by_value(boxes[..., 2], window[..., 0], window[..., 2])
    y2 = tf.clip_by_value(boxes[..., 3], window[..., 1], window[..., 3])
    return tf.stack([x1, y1, x2, y2], axis=-1)


def keep_boxes(boxes: tf.Tensor, full_area: tf.Tensor, valid: tf.Tensor,
               min_visible: float, min_box_size: float,
               visible_area: tf.Tensor | None = None) -> tf.Tensor:
    """Decides which boxes survive a geometric step.

    Args:
        boxes: float32 ``[..., 4]``, the boxes after clipping.
        full_area: float32 ``[...]``, the area each box would have without clipping
            (or occlusion), in the same frame.
        valid: bool ``[...]``, whether the row held a real box before the step.
        min_visible: the least fraction of ``full_area`` that must remain.
        min_box_size: the least width and height, in pixels.
        visible_area: float32 ``[...]``, the area still seen; the area of ``boxes`` when
            omitted (occlusion can leave less than the box's area in view).

    Returns:
        bool ``[...]``.
    """
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    if visible_area is None:
        visible_area = box_area(boxes)
    visible = visible_area >= min_visible * full_area
    return valid & (w >= min_box_size) & (h >= min_box_size) & visible & (full_area > 0.0)


def pack_boxes(boxes: tf.Tensor, classes: tf.Tensor, keep: tf.Tensor,
               max_boxes: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Moves the kept boxes first (in their order), pads with -1 and keeps ``max_boxes``.

    Args:
        boxes: float32 ``[B, N, 4]``.
        classes: int32 ``[B, N]``.
        keep: bool ``[B, N]``.
        max_boxes: rows in the result (``N >= max_boxes``).

    Returns:
        ``(boxes [B, max_boxes, 4], classes [B, max_boxes])``, -1 padded.
    """
    n = boxes.shape[1]
    position = tf.range(n, dtype=tf.int32)[tf.newaxis, :]
    # Kept rows rank by position, dropped rows after every kept one.
    key = tf.where(keep, position, position + n)
    _, order = tf.math.top_k(-key, k=max_boxes, sorted=True)
    kept = tf.gather(keep, order, batch_dims=1)
    boxes = tf.where(kept[..., tf.newaxis], tf.gather(boxes, order, batch_dims=1), PAD)
    classes = tf.where(kept, tf.gather(classes, order, batch_dims=1), -1)
    return boxes, classes


def clean_boxes(boxes: tf.Tensor, classes: tf.Tensor, image_size: int, min_visible: float,
                min_box_size: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Clips boxes to the image, drops degenerate ones and re-packs.

    Args:
        boxes: float32 ``[B, M, 4]``.
        classes: int32 ``[B, M]``.
        image_size: the image side ``S``.
        min_visible: the least fraction of a box's area that must lie inside the image.
        min_box_size: the least width and height, in pixels.

    Returns:
        ``(boxes, classes)`` of the same shapes.
    """
    valid = valid_boxes(boxes, classes)
    clipped = clip_boxes(boxes, tf.constant([0.0, 0.0, image_size, image_size]))
    keep = keep_boxes(clipped, box_area(boxes), valid, min_visible, min_box_size)
    return pack_boxes(clipped, classes, keep, boxes.shape[1])
