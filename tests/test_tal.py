"""Tests of effdet_tf.tal (task-aligned anchor assignment) against a plain numpy reference."""

import numpy as np
import pytest
from keras import ops

from effdet_tf import anchors as anchor_lib
from effdet_tf.box_coder import decode_boxes, encode_boxes
from effdet_tf.tal import ALPHA, BETA, TOP_K, tal_match
from tests.jax_subprocess import jitted_matched_classes

ANCHORS = anchor_lib.generate_anchors(128)
NUM_CLASSES = 3


def _iou(a, b):
    ix = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    iy = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = ix * iy
    union = (max(a[2] - a[0], 0) * max(a[3] - a[1], 0) + (b[2] - b[0]) * (b[3] - b[1])
             - inter)
    return inter / union if union > 0 else 0.0


def _reference(boxes, classes, logits, deltas):
    """Task alignment for one image, box by box, as TOOD / YOLOv8 state it."""
    predicted = ops.convert_to_numpy(decode_boxes(deltas, ANCHORS))
    probs = 1.0 / (1.0 + np.exp(-logits))
    centres = (ANCHORS[:, :2] + ANCHORS[:, 2:]) / 2.0
    chosen_by = [[] for _ in ANCHORS]
    owner = np.full(len(ANCHORS), -1)
    for m, (box, cls) in enumerate(zip(boxes, classes)):
        if cls < 0 or box[2] <= box[0] or box[3] <= box[1]:
            continue
        inside = ((box[0] < centres[:, 0]) & (centres[:, 0] < box[2])
                  & (box[1] < centres[:, 1]) & (centres[:, 1] < box[3]))
        overlap = np.array([_iou(p, box) for p in predicted])
        metric = np.where(inside, probs[:, cls] ** ALPHA * overlap ** BETA, 0.0)
        order = np.argsort(-metric, kind="stable")[:TOP_K]
        for a in order:
            if metric[a] > 0:
                chosen_by[a].append((overlap[a], m))
    for a, claims in enumerate(chosen_by):
        if claims:
            owner[a] = max(claims, key=lambda c: (c[0], -c[1]))[1]  # ties: the first box
    for m, (box, cls) in enumerate(zip(boxes, classes)):
        if cls < 0 or box[2] <= box[0] or box[3] <= box[1]:
            continue
        prior = np.array([_iou(a, box) for a in ANCHORS])
        if prior.max() > 0:
            owner[int(np.argmax(prior))] = m  # a box's best anchor is its own
    return owner


def _random_boxes(rng, count):
    corners = rng.uniform(0, 100, size=(count, 2))
    sizes = rng.uniform(12, 90, size=(count, 2))
    return np.concatenate([corners, np.minimum(corners + sizes, 128)], axis=1).astype(np.float32)


def _batch(seed=3):
    rng = np.random.default_rng(seed)
    boxes = np.full((3, 5, 4), -1.0, np.float32)
    classes = np.full((3, 5), -1, np.int32)
    for image, count in enumerate((5, 2, 0)):
        boxes[image, :count] = _random_boxes(rng, count)
        classes[image, :count] = rng.integers(0, NUM_CLASSES, size=count)
    logits = rng.normal(-3.0, 1.5, size=(3, len(ANCHORS), NUM_CLASSES)).astype(np.float32)
    deltas = rng.normal(0.0, 0.3, size=(3, len(ANCHORS), 4)).astype(np.float32)
    return boxes, classes, logits, deltas


def _match(*args, **kwargs):
    return {k: ops.convert_to_numpy(v) for k, v in tal_match(ANCHORS, *args, **kwargs).items()}


def test_matches_reference_on_random_predictions():
    """Every anchor gets the box the box-by-box reference gives it, padding included."""
    boxes, classes, logits, deltas = _batch()
    match = _match(boxes, classes, logits, deltas)
    for image in range(3):
        owner = _reference(boxes[image], classes[image], logits[image], deltas[image])
        positive = owner >= 0
        np.testing.assert_array_equal(match["positive"][image], positive)
        np.testing.assert_array_equal(match["matched_index"][image][positive], owner[positive])
        np.testing.assert_array_equal(match["matched_classes"][image][positive],
                                      classes[image][owner[positive]])
        assert (match["matched_classes"][image][~positive] == -1).all()
    assert 0 < match["num_positives"][0] <= 5 * (TOP_K + 1)
    assert match["num_positives"][2] == 0
    assert not match["ignore"].any()


def test_follows_the_head_not_the_anchor_shape():
    """With untrained outputs a box takes the anchors inside it that overlap it most; once
    the head scores and places another anchor inside the box well, that one is chosen."""
    boxes = np.array([[[30, 30, 90, 80]]], np.float32)
    classes = np.array([[1]], np.int32)
    logits = np.full((1, len(ANCHORS), NUM_CLASSES), -4.6, np.float32)
    deltas = np.zeros((1, len(ANCHORS), 4), np.float32)
    untrained = _match(boxes, classes, logits, deltas)["positive"][0]
    centres = (ANCHORS[:, :2] + ANCHORS[:, 2:]) / 2.0
    inside = ((30 < centres[:, 0]) & (centres[:, 0] < 90) & (30 < centres[:, 1])
              & (centres[:, 1] < 80))
    prior = np.array([_iou(a, boxes[0, 0]) for a in ANCHORS])
    inside_prior = np.where(inside, prior, 0.0)
    kth = np.sort(inside_prior)[-TOP_K]  # anchors tied with the k-th (same IoU) are in too
    expected = np.nonzero(inside_prior >= kth * (1 - 1e-5))[0]
    assert set(np.nonzero(untrained)[0]) == set(expected.tolist())
    # an anchor inside the box that the untrained rule left out, now predicting the box
    # exactly with a confident class 1
    outsider = int(np.nonzero(inside & ~untrained & (prior > 0))[0][0])
    deltas[0, outsider] = ops.convert_to_numpy(encode_boxes(boxes[0, 0], ANCHORS[outsider]))
    logits[0, outsider, 1] = 4.0
    trained = _match(boxes, classes, logits, deltas)["positive"][0]
    assert trained[outsider]
    assert set(np.nonzero(trained)[0]) - {outsider} < set(np.nonzero(untrained)[0])


def test_small_box_keeps_its_best_anchor():
    """A box with no anchor centre inside it still trains the anchor it overlaps most."""
    boxes = np.array([[[61, 61, 63, 63]]], np.float32)
    classes = np.array([[0]], np.int32)
    logits = np.zeros((1, len(ANCHORS), NUM_CLASSES), np.float32)
    deltas = np.zeros((1, len(ANCHORS), 4), np.float32)
    match = _match(boxes, classes, logits, deltas)
    prior = np.array([_iou(a, boxes[0, 0]) for a in ANCHORS])
    assert np.nonzero(match["positive"][0])[0].tolist() == [int(np.argmax(prior))]


def test_runs_in_a_compiled_tensorflow_graph():
    """The assigner traces with an unknown batch size and box count, as in the train step."""
    tf = pytest.importorskip("tensorflow")
    boxes, classes, logits, deltas = _batch(seed=4)
    fn = tf.function(lambda b, c, l, d: tal_match(ANCHORS, b, c, l, d)["matched_index"],
                     input_signature=[tf.TensorSpec([None, None, 4], tf.float32),
                                      tf.TensorSpec([None, None], tf.int32),
                                      tf.TensorSpec([None, len(ANCHORS), NUM_CLASSES],
                                                    tf.float32),
                                      tf.TensorSpec([None, len(ANCHORS), 4], tf.float32)])
    eager = _match(boxes, classes, logits, deltas)
    positive = eager["positive"]
    np.testing.assert_array_equal(fn(boxes, classes, logits, deltas).numpy()[positive],
                                  eager["matched_index"][positive])


def test_jax_jit_matches_tensorflow(tmp_path):
    """Under KERAS_BACKEND=jax, jitted, the assignment is the same as under TensorFlow."""
    arrays = _batch(seed=5)
    got = jitted_matched_classes("tal", "tal_match", arrays, tmp_path)
    expected = _match(*arrays)["matched_classes"]
    np.testing.assert_array_equal(got, expected)
    assert (expected >= 0).sum() > 0
