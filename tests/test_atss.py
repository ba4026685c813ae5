"""Tests of effdet_tf.atss (ATSS anchor assignment) against a plain numpy reference."""

import numpy as np
import pytest
from keras import ops

from effdet_tf import anchors as anchor_lib
from effdet_tf.atss import atss_match
from tests.jax_subprocess import jitted_matched_classes

ANCHORS = anchor_lib.generate_anchors(128)
COUNTS = [anchor_lib.NUM_ANCHORS_PER_LOCATION * s * s for s in anchor_lib.level_shapes(128)]


def _iou(a, b):
    ix = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    iy = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _reference(boxes, classes, top_k=9):
    """ATSS for one image, box by box and level by level, as the paper states it (its
    candidates: the anchors of the `top_k` nearest locations of each level)."""
    centres = (ANCHORS[:, :2] + ANCHORS[:, 2:]) / 2.0
    best = np.full(len(ANCHORS), -1.0)
    owner = np.full(len(ANCHORS), -1)
    for m, (box, cls) in enumerate(zip(boxes, classes)):
        if cls < 0 or box[2] <= box[0] or box[3] <= box[1]:
            continue
        ious = np.array([_iou(a, box) for a in ANCHORS])
        centre = (box[:2] + box[2:]) / 2.0
        distance = ((centres - centre) ** 2).sum(axis=1)
        candidates = []
        start = 0
        for count in COUNTS:
            level = distance[start:start + count]
            kth = np.sort(level)[min(top_k * anchor_lib.NUM_ANCHORS_PER_LOCATION, count) - 1]
            candidates += [start + i for i in np.nonzero(level <= kth)[0]]
            start += count
        threshold = ious[candidates].mean() + ious[candidates].std(ddof=1)
        for a in candidates:
            inside = (box[0] < centres[a, 0] < box[2]) and (box[1] < centres[a, 1] < box[3])
            if inside and ious[a] >= threshold and ious[a] > best[a]:
                best[a], owner[a] = ious[a], m
        forced = int(np.argmax(ious))
        if ious[forced] > 0:
            best[forced], owner[forced] = np.inf, m  # a box's best anchor is its own
    return owner


def _random_boxes(rng, count):
    corners = rng.uniform(0, 128, size=(count, 2))
    sizes = rng.uniform(4, 90, size=(count, 2))
    return np.concatenate([corners, np.minimum(corners + sizes, 128)], axis=1).astype(np.float32)


def test_matches_reference_on_random_boxes():
    """Every anchor gets the box the step-by-step reference gives it, padding included."""
    rng = np.random.default_rng(3)
    boxes = np.full((3, 6, 4), -1.0, np.float32)
    classes = np.full((3, 6), -1, np.int32)
    for image, count in enumerate((6, 3, 0)):
        boxes[image, :count] = _random_boxes(rng, count)
        classes[image, :count] = rng.integers(0, 4, size=count)
    match = {k: ops.convert_to_numpy(v) for k, v in
             atss_match(ANCHORS, boxes, classes, level_counts=COUNTS).items()}
    for image in range(3):
        owner = _reference(boxes[image], classes[image])
        np.testing.assert_array_equal(match["positive"][image], owner >= 0)
        positive = owner >= 0
        np.testing.assert_array_equal(match["matched_index"][image][positive], owner[positive])
        np.testing.assert_array_equal(match["matched_classes"][image][positive],
                                      classes[image][owner[positive]])
        assert (match["matched_classes"][image][~positive] == -1).all()
    assert match["num_positives"][2] == 0
    assert not match["ignore"].any()


def test_small_and_large_boxes_get_few_positives_on_their_levels():
    """A 6 px box gets a positive on the finest level only; a 100 px box none on P3."""
    boxes = np.array([[[60, 60, 66, 66], [10, 10, 110, 110]]], np.float32)
    classes = np.array([[0, 1]], np.int32)
    match = {k: ops.convert_to_numpy(v) for k, v in
             atss_match(ANCHORS, boxes, classes, level_counts=COUNTS).items()}
    owner = np.where(match["positive"][0], match["matched_index"][0], -1)
    p3 = slice(0, COUNTS[0])
    small = np.nonzero(owner == 0)[0]
    assert 1 <= len(small) <= 9 and (small < COUNTS[0]).all()
    large = np.nonzero(owner == 1)[0]
    assert len(large) >= 1 and not (owner[p3] == 1).any()


def test_level_counts_must_cover_the_anchors():
    with pytest.raises(ValueError, match="level_counts"):
        atss_match(ANCHORS, np.zeros((1, 1, 4), np.float32), np.zeros((1, 1), np.int32),
                   level_counts=COUNTS[:-1])


def test_runs_in_a_compiled_tensorflow_graph():
    """The assigner traces with an unknown batch size, as in the train step."""
    tf = pytest.importorskip("tensorflow")
    boxes = np.array([[[20, 20, 60, 50]], [[-1, -1, -1, -1]]], np.float32)
    classes = np.array([[2], [-1]], np.int32)
    fn = tf.function(lambda b, c: atss_match(ANCHORS, b, c, level_counts=COUNTS)["positive"],
                     input_signature=[tf.TensorSpec([None, None, 4], tf.float32),
                                      tf.TensorSpec([None, None], tf.int32)])
    eager = ops.convert_to_numpy(atss_match(ANCHORS, boxes, classes, level_counts=COUNTS)
                                 ["positive"])
    np.testing.assert_array_equal(fn(boxes, classes).numpy(), eager)
    assert eager[0].any() and not eager[1].any()


def test_jax_jit_matches_tensorflow(tmp_path):
    """Under KERAS_BACKEND=jax, jitted, the assignment is the same as under TensorFlow."""
    rng = np.random.default_rng(5)
    boxes = np.reshape(_random_boxes(rng, 8), (2, 4, 4))
    classes = rng.integers(0, 3, size=(2, 4)).astype(np.int32)
    classes[1, 3] = -1
    got = jitted_matched_classes("atss", "atss_match", [boxes, classes], tmp_path,
                                 level_counts=COUNTS)
    expected = ops.convert_to_numpy(
        atss_match(ANCHORS, boxes, classes, level_counts=COUNTS)["matched_classes"])
    np.testing.assert_array_equal(got, expected)
    assert (expected >= 0).sum() > 0
