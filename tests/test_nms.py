"""Tests of effdet_tf.nms_tf (TensorFlow NMS and post-processing)."""
import keras
import numpy as np
import tensorflow as tf

import effdet_tf
from effdet_tf import nms_tf
from effdet_tf.detection_head import DetectionHead


def test_nms_hand_made_boxes():
    """Per-class NMS on boxes shared across classes, padding and thresholds."""
    boxes = np.array([[[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10]]],
                     np.float32)
    # Class 0: boxes 0 and 1 overlap (IoU 0.68), box 0 wins; box 2 separate; box 3 too low.
    # Class 1: box 3 alone (same place as box 0, but another class, so kept).
    scores = np.array([[[0.9, 0.0], [0.8, 0.0], [0.7, 0.0], [0.01, 0.6]]], np.float32)
    result = nms_tf.nms(boxes, scores, score_threshold=0.05, iou_threshold=0.5, max_detections=5)
    assert int(result["num_detections"][0]) == 3
    np.testing.assert_allclose(result["scores"][0, :3], [0.9, 0.7, 0.6])
    np.testing.assert_array_equal(result["classes"][0, :3], [0, 0, 1])
    np.testing.assert_allclose(result["boxes"][0, :3], boxes[0, [0, 2, 3]])
    assert result["classes"].dtype == tf.int32 and result["boxes"].shape == (1, 5, 4)
    np.testing.assert_array_equal(result["scores"][0, 3:], 0.0)
    loose = nms_tf.nms(boxes, scores, iou_threshold=0.7, max_detections=5)
    assert int(loose["num_detections"][0]) == 4


def test_detect_head_decodes_with_the_head_then_suppresses():
    """A detection head's own decoding feeds the NMS, eagerly and in a tf.function."""
    head = DetectionHead(num_classes=1, image_size=128, name="h")
    anchors = head.anchors
    picked = [100, 2000]  # two anchors far apart; their boxes are the predictions
    logits = np.full((1, len(anchors), 1), -10.0, np.float32)
    logits[0, picked, 0] = [3.0, 2.0]
    deltas = np.zeros((1, len(anchors), 4), np.float32)
    out = nms_tf.detect_head(head, {"class_logits": logits, "box_deltas": deltas},
                             max_detections=4)
    assert int(out["num_detections"][0]) == 2
    np.testing.assert_allclose(out["boxes"][0, :2], np.clip(anchors[picked], 0, 128), atol=1e-4)
    np.testing.assert_allclose(out["scores"][0, :2], 1 / (1 + np.exp([-3.0, -2.0])), rtol=1e-5)
    traced = tf.function(lambda l, d: nms_tf.detect_head(
        head, {"class_logits": l, "box_deltas": d}, max_detections=4))
    assert int(traced(logits, deltas)["num_detections"][0]) == 2


def test_detect_on_model():
    """detect() returns the documented keys and shapes for every head."""
    inputs = keras.Input((128, 128, 3))
    feats = [keras.layers.Conv2D(8, 3, strides=s, padding="same")(inputs) for s in (8, 16, 32)]
    model = effdet_tf.build_detector(heads={"a": 2, "b": 1}, image_size=128,
                                     backbone=keras.Model(inputs, feats), fpn_cells=1,
                                     head_layers=1)
    images = np.zeros((2, 128, 128, 3), np.uint8)
    out = nms_tf.detect(model, images, score_threshold=0.0, max_detections=7)
    assert set(out) == {"a", "b"}
    assert out["a"]["boxes"].shape == (2, 7, 4)
    assert out["b"]["classes"].shape == (2, 7)
    assert out["a"]["num_detections"].shape == (2,)
    assert int(out["b"]["num_detections"][0]) == 7
