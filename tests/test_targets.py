"""Tests of effdet_tf.targets (matching, encoding) and effdet_tf.box_coder."""
import numpy as np
from keras import ops

from effdet_tf.box_coder import decode_boxes, encode_boxes
from effdet_tf.targets import encode_targets, match_anchors, pairwise_iou

ANCHORS = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [0, 10, 10, 20], [20, 20, 40, 40]],
                   np.float32)


def test_pairwise_iou():
    boxes = np.array([[[0, 0, 10, 10], [5, 0, 15, 10], [-1, -1, -1, -1]]], np.float32)
    iou = ops.convert_to_numpy(pairwise_iou(ANCHORS, boxes))
    assert iou.shape == (1, 4, 3)
    np.testing.assert_allclose(iou[0, 0], [1.0, 1 / 3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(iou[0, 1], [0.0, 1 / 3, 0.0], rtol=1e-6)


def test_match_threshold_forced_and_padding():
    """IoU >= 0.5 matches, a low-IoU box still gets its best anchor, padding never matches."""
    # Image 0: box 0 equals anchor 0 (IoU 1); box 1 is small inside anchor 3 (IoU 0.25 < 0.5,
    # forced); row 2 is padding. Image 1: only padding.
    boxes = np.array([[[0, 0, 10, 10], [20, 20, 30, 30], [-1, -1, -1, -1]],
                      [[-1, -1, -1, -1]] * 3], np.float32)
    classes = np.array([[2, 0, -1], [-1, -1, -1]], np.int32)
    match = {k: ops.convert_to_numpy(v) for k, v in match_anchors(ANCHORS, boxes, classes).items()}
    np.testing.assert_array_equal(match["positive"], [[True, False, False, True], [False] * 4])
    np.testing.assert_array_equal(match["matched_classes"], [[2, -1, -1, 0], [-1] * 4])
    np.testing.assert_array_equal(match["num_positives"], [2.0, 0.0])
    np.testing.assert_allclose(match["matched_boxes"][0, 3], [20, 20, 30, 30])
    # Non-positive anchors carry their own box (safe to encode).
    np.testing.assert_allclose(match["matched_boxes"][0, 1], ANCHORS[1])
    assert not match["ignore"].any()


def test_ignore_band_and_padding_class_only():
    """Anchors between the thresholds are ignored; a class -1 row is padding."""
    # A box with a valid shape but class -1 is padding too.
    boxes = np.array([[[0, 0, 10, 14], [10, 0, 20, 10]]], np.float32)
    classes = np.array([[1, -1]], np.int32)
    match = match_anchors(ANCHORS, boxes, classes, matched_threshold=0.8,
                          unmatched_threshold=0.4)
    positive = ops.convert_to_numpy(match["positive"])
    ignore = ops.convert_to_numpy(match["ignore"])
    # Anchor 0: IoU 100/140 = 0.71 in [0.4, 0.8) but it is box 0's best anchor: forced positive.
    np.testing.assert_array_equal(positive, [[True, False, False, False]])
    # Anchor 2 overlaps box 0 with IoU 40/200 = 0.2: negative, anchor 1 (class -1 box) too.
    np.testing.assert_array_equal(ignore, [[False, False, False, False]])
    boxes2 = np.array([[[0, 0, 10, 14], [0, 0, 10, 10]]], np.float32)
    match2 = match_anchors(ANCHORS, boxes2, np.array([[1, 0]], np.int32),
                           matched_threshold=0.8, unmatched_threshold=0.1)
    # Box 1 takes anchor 0 (IoU 1); box 0's best anchor is also 0, so both claim it: the
    # later box wins; anchor 2 (IoU 0.2 with box 0) is in the ignore band.
    np.testing.assert_array_equal(ops.convert_to_numpy(match2["ignore"]),
                                  [[False, False, True, False]])


def test_encode_targets():
    """One-hot class targets and encoded deltas, zero off the positives."""
    boxes = np.array([[[0, 0, 10, 10], [20, 20, 30, 30]]], np.float32)
    classes = np.array([[2, 0]], np.int32)
    targets = encode_targets(ANCHORS, match_anchors(ANCHORS, boxes, classes), num_classes=3)
    one_hot = ops.convert_to_numpy(targets["class_targets"])
    np.testing.assert_array_equal(one_hot[0], [[0, 0, 1], [0, 0, 0], [0, 0, 0], [1, 0, 0]])
    box_targets = ops.convert_to_numpy(targets["box_targets"])
    np.testing.assert_allclose(box_targets[0, 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(box_targets[0, 3], [-0.25, -0.25, np.log(0.5), np.log(0.5)],
                               rtol=1e-6)
    assert np.isfinite(box_targets).all()
    # A class outside the head's range (another dataset's example) gives a zero row.
    wide = encode_targets(ANCHORS, match_anchors(ANCHORS, boxes, classes), num_classes=2)
    np.testing.assert_array_equal(ops.convert_to_numpy(wide["class_targets"])[0, 0], [0, 0])


def test_box_coder_round_trip():
    rng = np.random.default_rng(0)
    anchors = rng.uniform(0, 100, (50, 2)).astype(np.float32)
    anchors = np.concatenate([anchors, anchors + rng.uniform(5, 60, (50, 2))], -1)
    boxes = rng.uniform(0, 100, (50, 2)).astype(np.float32)
    boxes = np.concatenate([boxes, boxes + rng.uniform(1, 80, (50, 2))], -1).astype(np.float32)
    deltas = encode_boxes(boxes, anchors)
    np.testing.assert_allclose(ops.convert_to_numpy(decode_boxes(deltas, anchors)), boxes,
                               rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(ops.convert_to_numpy(encode_boxes(anchors, anchors)), 0.0,
                               atol=1e-6)


def test_match_in_tf_graph_with_unknown_batch():
    tf = __import__("tensorflow")
    spec = (tf.TensorSpec([None, None, 4], tf.float32), tf.TensorSpec([None, None], tf.int32))
    fn = tf.function(lambda b, c: match_anchors(ANCHORS, b, c)["matched_classes"],
                     input_signature=spec)
    boxes = np.array([[[20, 20, 30, 30], [-1] * 4]] * 3, np.float32)
    classes = np.array([[4, -1]] * 3, np.int32)
    np.testing.assert_array_equal(fn(boxes, classes).numpy(), [[-1, -1, -1, 4]] * 3)
