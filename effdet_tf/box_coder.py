"""Centre/size box coding against anchors (the Faster R-CNN coder automl uses), keras.ops."""
from typing import Any

from keras import ops

TensorLike = Any  # a backend tensor, numpy array or KerasTensor

# Largest log-size delta decoded, so exp() stays finite (log(1000 / 16), as detectron2).
MAX_SIZE_DELTA = 4.135166556742356


def _centre_size(boxes: TensorLike) -> tuple:
    """Splits xyxy boxes into centre x, centre y, width, height (each [..., 1])."""
    x1, y1, x2, y2 = ops.split(boxes, 4, axis=-1)
    return (x1 + x2) * 0.5, (y1 + y2) * 0.5, x2 - x1, y2 - y1


def encode_boxes(boxes: TensorLike, anchors: TensorLike) -> TensorLike:
    """Encodes boxes as deltas from anchors.

    `tx = (cx - cx_a) / w_a`, `ty = (cy - cy_a) / h_a`, `tw = log(w / w_a)`,
    `th = log(h / h_a)`, in that order (x first, unlike automl's y-first order).

    Args:
        boxes: `[..., 4]` xyxy pixels, positive width and height.
        anchors: `[..., 4]` xyxy pixels, broadcastable to `boxes`.

    Returns:
        float32 `[..., 4]` deltas `tx, ty, tw, th`.

    Example:
        >>> encode_boxes(anchors, anchors)  # all zeros
    """
    boxes = ops.cast(boxes, "float32")
    anchors = ops.cast(anchors, "float32")
    cx, cy, w, h = _centre_size(boxes)
    acx, acy, aw, ah = _centre_size(anchors)
    return ops.concatenate(
        [(cx - acx) / aw, (cy - acy) / ah, ops.log(w / aw), ops.log(h / ah)], axis=-1)


def decode_boxes(deltas: TensorLike, anchors: TensorLike) -> TensorLike:
    """Decodes deltas from `encode_boxes` back into xyxy boxes.

    Args:
        deltas: `[..., 4]` `tx, ty, tw, th`.
        anchors: `[..., 4]` xyxy pixels, broadcastable to `deltas`.

    Returns:
        float32 `[..., 4]` xyxy pixels (size deltas clipped at `MAX_SIZE_DELTA`).

    Example:
        >>> decode_boxes(encode_boxes(boxes, anchors), anchors)  # == boxes
    """
    deltas = ops.cast(deltas, "float32")
    anchors = ops.cast(anchors, "float32")
    acx, acy, aw, ah = _centre_size(anchors)
    tx, ty, tw, th = ops.split(deltas, 4, axis=-1)
    cx = tx * aw + acx
    cy = ty * ah + acy
    half_w = ops.exp(ops.minimum(tw, MAX_SIZE_DELTA)) * aw * 0.5
    half_h = ops.exp(ops.minimum(th, MAX_SIZE_DELTA)) * ah * 0.5
    return ops.concatenate([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)
