"""Exportable NMS (TensorFlow): raw detector outputs -> final detections per head.

Uses `tf.image.combined_non_max_suppression` with one box per anchor shared by all
classes (`[B, A, 1, 4]`, q = 1), the form that converts to ONNX.
"""
from typing import Any, Dict, Mapping

import numpy as np
import tensorflow as tf

from effdet_tf.box_coder import MAX_SIZE_DELTA

DEFAULT_SCORE_THRESHOLD = 0.05
DEFAULT_IOU_THRESHOLD = 0.5
DEFAULT_MAX_DETECTIONS = 100
TensorLike = Any  # a backend tensor, numpy array or KerasTensor


def decode_tf(class_logits: tf.Tensor, box_deltas: tf.Tensor, anchors: TensorLike,
              image_size: int) -> Dict[str, tf.Tensor]:
    """Decodes one head's raw outputs with TensorFlow ops (same maths as `box_coder`).

    Args:
        class_logits: `[B, A, C]`.
        box_deltas: `[B, A, 4]` `tx, ty, tw, th`.
        anchors: `[A, 4]` xyxy pixels.
        image_size: boxes are clipped to `[0, image_size]`.

    Returns:
        `{"boxes": [B, A, 4] xyxy, "scores": [B, A, C] sigmoid}`.
    """

    anchors = tf.convert_to_tensor(anchors, tf.float32)
    size = anchors[:, 2:] - anchors[:, :2]
    centre = anchors[:, :2] + 0.5 * size
    deltas = tf.cast(box_deltas, tf.float32)
    new_centre = deltas[..., :2] * size + centre
    new_half = 0.5 * tf.exp(tf.minimum(deltas[..., 2:], MAX_SIZE_DELTA)) * size
    boxes = tf.concat([new_centre - new_half, new_centre + new_half], axis=-1)
    return {"boxes": tf.clip_by_value(boxes, 0.0, float(image_size)),
            "scores": tf.sigmoid(tf.cast(class_logits, tf.float32))}


def nms(boxes: tf.Tensor, scores: tf.Tensor, *,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        iou_threshold: float = DEFAULT_IOU_THRESHOLD,
        max_detections: int = DEFAULT_MAX_DETECTIONS) -> Dict[str, tf.Tensor]:
    """Per-class NMS over boxes shared across classes.

    Args:
        boxes: `[B, A, 4]` xyxy.
        scores: `[B, A, C]` probabilities.
        score_threshold: scores below are dropped.
        iou_threshold: overlap above which the lower-scored box of a class is dropped.
        max_detections: K, detections kept per image (and per class).

    Returns:
        `{"boxes": float32 [B, K, 4] xyxy, "scores": float32 [B, K], "classes": int32 [B, K],
        "num_detections": int32 [B]}`, zero padded after `num_detections`.

    Example:
        >>> nms(boxes, scores, max_detections=100)["num_detections"]
    """
    result = tf.image.combined_non_max_suppression(
        boxes=tf.expand_dims(tf.cast(boxes, tf.float32), 2),
        scores=tf.cast(scores, tf.float32),
        max_output_size_per_class=max_detections,
        max_total_size=max_detections,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        pad_per_class=False,
        clip_boxes=False)
    return {"boxes": result.nmsed_boxes,
            "scores": result.nmsed_scores,
            "classes": tf.cast(result.nmsed_classes, tf.int32),
            "num_detections": tf.cast(result.valid_detections, tf.int32)}


def postprocess(outputs: Mapping[str, Mapping], anchors: np.ndarray, image_size: int, *,
                score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                iou_threshold: float = DEFAULT_IOU_THRESHOLD,
                max_detections: int = DEFAULT_MAX_DETECTIONS) -> Dict[str, Dict[str, tf.Tensor]]:
    """Raw model outputs -> detections of every head (pure TF, wrap it in a tf.function).

    Args:
        outputs: `{head: {"class_logits": [B, A, C], "box_deltas": [B, A, 4]}}`.
        anchors: `[A, 4]` xyxy pixels (`model.anchors`).
        image_size: side of the model input.
        score_threshold: see `nms`.
        iou_threshold: see `nms`.
        max_detections: see `nms`.

    Returns:
        `{head: {"boxes", "scores", "classes", "num_detections"}}` as `nms`.

    Example:
        >>> fn = tf.function(lambda x: postprocess(model(x), model.anchors, 512))
    """
    detections = {}
    for head, raw in outputs.items():
        decoded = decode_tf(tf.convert_to_tensor(raw["class_logits"]),
                            tf.convert_to_tensor(raw["box_deltas"]), anchors, image_size)
        detections[head] = nms(decoded["boxes"], decoded["scores"],
                               score_threshold=score_threshold, iou_threshold=iou_threshold,
                               max_detections=max_detections)
    return detections


def detect(model: Any, images: TensorLike, *, score_threshold: float = DEFAULT_SCORE_THRESHOLD,
           iou_threshold: float = DEFAULT_IOU_THRESHOLD,
           max_detections: int = DEFAULT_MAX_DETECTIONS) -> Dict[str, Dict[str, tf.Tensor]]:
    """Runs a `MultiHeadDetector` in inference mode and applies NMS per head.

    Args:
        model: the detector.
        images: `[B, S, S, 3]` RGB `0..255`, float32 or uint8.
        score_threshold: see `nms`.
        iou_threshold: see `nms`.
        max_detections: see `nms`.

    Returns:
        `{head: {"boxes" [B, K, 4] xyxy pixels, "scores" [B, K], "classes" [B, K] int32,
        "num_detections" [B] int32}}`.

    Example:
        >>> detect(model, images)["fruits"]["num_detections"]
    """
    raw = model(images, training=False)
    raw = {head: {k: np.asarray(v) if not tf.is_tensor(v) else v for k, v in out.items()}
           for head, out in raw.items()}
    return postprocess(raw, model.anchors, model.image_size, score_threshold=score_threshold,
                       iou_threshold=iou_threshold, max_detections=max_detections)
