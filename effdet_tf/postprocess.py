"""Decoding raw detection outputs into boxes and scores (keras.ops, any backend)."""
from typing import Any

from keras import ops

from effdet_tf.box_coder import decode_boxes

TensorLike = Any  # a backend tensor, numpy array or KerasTensor


def decode_predictions(class_logits: TensorLike, box_deltas: TensorLike, anchors: TensorLike,
                       image_size: int) -> dict:
    """Turns one head's raw outputs into pixel boxes and class probabilities.

    Args:
        class_logits: `[B, A, C]` logits.
        box_deltas: `[B, A, 4]` deltas (`box_coder` convention).
        anchors: `[A, 4]` xyxy pixels.
        image_size: side of the model input; boxes are clipped to `[0, image_size]`.

    Returns:
        `{"boxes": float32 [B, A, 4] xyxy pixels, "scores": float32 [B, A, C] sigmoid}`.

    Example:
        >>> decode_predictions(out["class_logits"], out["box_deltas"], model.anchors, 512)
    """
    boxes = decode_boxes(box_deltas, ops.convert_to_tensor(anchors, "float32")[None])
    boxes = ops.clip(boxes, 0.0, float(image_size))
    scores = ops.sigmoid(ops.cast(class_logits, "float32"))
    return {"boxes": boxes, "scores": scores}
