"""Exportable NMS (TensorFlow): raw detector outputs -> final detections per head.

Decoding is the head's own (`DetectionHead.postprocess`, keras.ops); only the NMS is
TensorFlow here.

Uses `tf.image.combined_non_max_suppression` with one box per anchor shared by all
classes (`[B, A, 1, 4]`, q = 1), the form that converts to ONNX.
"""
from typing import Any, Dict, Mapping, Sequence

import numpy as np
import tensorflow as tf

DEFAULT_SCORE_THRESHOLD = 0.05
DEFAULT_IOU_THRESHOLD = 0.5
DEFAULT_MAX_DETECTIONS = 100
TensorLike = Any  # a backend tensor, numpy array or KerasTensor


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


def detect_head(head: Any, raw: Mapping[str, TensorLike], *,
                score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                iou_threshold: float = DEFAULT_IOU_THRESHOLD,
                max_detections: int = DEFAULT_MAX_DETECTIONS) -> Dict[str, tf.Tensor]:
    """One detection head's raw outputs -> its detections: `head.postprocess`, then NMS.

    Args:
        head: a `DetectionHead` (its `postprocess` decodes boxes and scores, keras.ops).
        raw: `{"class_logits": [B, A, C], "box_deltas": [B, A, 4]}`.
        score_threshold: see `nms`.
        iou_threshold: see `nms`.
        max_detections: see `nms`.

    Returns:
        As `nms`.
    """
    decoded = head.postprocess(raw)
    return nms(*(v if tf.is_tensor(v) else tf.convert_to_tensor(np.asarray(v))
                 for v in (decoded["boxes"], decoded["scores"])),
               score_threshold=score_threshold, iou_threshold=iou_threshold,
               max_detections=max_detections)


def postprocess(model: Any, outputs: Mapping[str, Mapping], *,
                score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                iou_threshold: float = DEFAULT_IOU_THRESHOLD,
                max_detections: int = DEFAULT_MAX_DETECTIONS) -> Dict[str, Dict[str, tf.Tensor]]:
    """Raw model outputs -> detections of every detection head (wrap it in a tf.function).

    Args:
        model: the `MultiHeadDetector` whose outputs these are.
        outputs: `{head: {"class_logits": [B, A, C], "box_deltas": [B, A, 4]}}`.
        score_threshold: see `nms`.
        iou_threshold: see `nms`.
        max_detections: see `nms`.

    Returns:
        `{head: {"boxes", "scores", "classes", "num_detections"}}` as `nms`, for the
        heads of kind "detection".

    Example:
        >>> fn = tf.function(lambda x: postprocess(model, model(x)))
    """
    heads = model.task_heads
    return {spec.name: detect_head(heads[spec.name], outputs[spec.name],
                                   score_threshold=score_threshold,
                                   iou_threshold=iou_threshold, max_detections=max_detections)
            for spec in model.head_specs if spec.kind == "detection"}


def class_names(names: Sequence[str], indices: TensorLike) -> tf.Tensor:
    """The string class names of class indices (any shape), for exported outputs."""
    return tf.gather(tf.constant(list(names), tf.string), indices)


def serving_detections(head: Any, raw: Mapping[str, TensorLike],
                       context: Any) -> Dict[str, tf.Tensor]:
    """A detection head's exported outputs: NMS, input-pixel boxes, padding marked.

    Args:
        head: the `DetectionHead`.
        raw: its raw outputs for the letterboxed frames.
        context: the export's `ServingContext` (thresholds, `max_detections`, class
            names, `with_names`, `to_input_pixels`).

    Returns:
        See `DetectionHead.serving_outputs`.
    """
    found = detect_head(head, raw, score_threshold=context.score_threshold,
                        iou_threshold=context.iou_threshold,
                        max_detections=context.max_detections)
    count = tf.cast(found["num_detections"], tf.int32)
    rank = tf.range(tf.shape(found["boxes"])[1], dtype=tf.int32)
    valid = rank[None, :] < count[:, None]
    boxes = context.to_input_pixels(found["boxes"])
    classes = tf.where(valid, tf.cast(found["classes"], tf.int32), -1)
    result = {"boxes": tf.where(valid[..., None], boxes, -tf.ones_like(boxes)),
              "scores": tf.where(valid, found["scores"], 0.0),
              "classes": classes, "num_detections": count}
    if context.with_names:
        result["class_names"] = tf.where(
            valid, class_names(context.class_names[head.name], tf.maximum(classes, 0)), "")
    return result


def detect(model: Any, images: TensorLike, *, score_threshold: float = DEFAULT_SCORE_THRESHOLD,
           iou_threshold: float = DEFAULT_IOU_THRESHOLD,
           max_detections: int = DEFAULT_MAX_DETECTIONS) -> Dict[str, Dict[str, tf.Tensor]]:
    """Runs a `MultiHeadDetector` in inference mode and applies NMS per detection head.

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
    return postprocess(model, model(images, training=False), score_threshold=score_threshold,
                       iou_threshold=iou_threshold, max_detections=max_detections)
