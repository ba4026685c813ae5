"""Tests of effdet_tf.losses and the masked head loss."""
import numpy as np
import pytest
from keras import ops

from effdet_tf import losses
from effdet_tf.anchors import generate_anchors
from effdet_tf.detection_head import DetectionHead
from effdet_tf.targets import encode_targets, match_anchors


def _np(x):
    return ops.convert_to_numpy(x)


def _focal_reference(y, logit, alpha=0.25, gamma=1.5):
    p = 1 / (1 + np.exp(-logit))
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    p_t = y * p + (1 - y) * (1 - p)
    return (y * alpha + (1 - y) * (1 - alpha)) * (1 - p_t) ** gamma * bce


def test_focal_known_values():
    np.testing.assert_allclose(_np(losses.focal_loss(np.ones(1), np.zeros(1))),
                               [0.25 * 0.5 ** 1.5 * np.log(2)], rtol=1e-6)
    y = np.array([0, 0, 1, 1, 0], np.float32)
    logits = np.array([2.0, -3.0, 4.0, -1.0, 0.0], np.float32)
    np.testing.assert_allclose(_np(losses.focal_loss(y, logits)), _focal_reference(y, logits),
                               rtol=1e-5)
    # Large logits stay finite.
    assert np.isfinite(_np(losses.focal_loss(np.zeros(2), np.array([100.0, -100.0])))).all()


def test_huber_known_values():
    err = np.array([0.0, 0.05, -0.1, 0.3], np.float32)
    np.testing.assert_allclose(_np(losses.huber_loss(np.zeros(4), err)),
                               [0.0, 0.00125, 0.005, 0.025], rtol=1e-6, atol=1e-9)


def test_ciou_known_values():
    a = np.array([[0, 0, 2, 2], [0, 0, 2, 2]], np.float32)
    b = np.array([[0, 0, 2, 2], [4, 0, 6, 2]], np.float32)
    # Identical: 0. Same shape, disjoint: 1 - (0 - 16 / 40) = 1.4.
    np.testing.assert_allclose(_np(losses.ciou_loss(a, b)), [0.0, 1.4], atol=1e-5)


def _head_case(box_loss="huber"):
    head = DetectionHead(num_classes=3, image_size=128, box_loss=box_loss, name="h")
    num = head.anchors.shape[0]
    rng = np.random.default_rng(1)
    y_pred = {"class_logits": rng.normal(size=(2, num, 3)).astype(np.float32),
              "box_deltas": rng.normal(scale=0.2, size=(2, num, 4)).astype(np.float32)}
    y_true = {"boxes": np.array([[[10, 10, 50, 40], [-1] * 4],
                                 [[60, 60, 120, 124], [0, 0, 30, 30]]], np.float32),
              "classes": np.array([[1, -1], [0, 2]], np.int32),
              "dataset_id": np.array([0, 0], np.int32)}
    return head, y_true, y_pred


def test_head_loss_matches_reference():
    """Head loss equals a numpy focal + Huber over the masked examples / (positives + 1)."""
    head, y_true, y_pred = _head_case()
    mask = np.array([1.0, 0.0], np.float32)
    parts = head.compute_loss(y_true, y_pred, mask, {})
    anchors = generate_anchors(128)
    targets = {k: _np(v) for k, v in encode_targets(
        anchors, match_anchors(anchors, y_true["boxes"], y_true["classes"]), 3).items()}
    norm = targets["num_positives"][0] + 1.0
    cls_ref = _focal_reference(targets["class_targets"][0], y_pred["class_logits"][0]).sum() / norm
    err = np.abs(targets["box_targets"][0] - y_pred["box_deltas"][0])
    hub = np.where(err <= 0.1, 0.5 * err ** 2, 0.1 * (err - 0.05))
    box_ref = 50.0 * (hub * targets["positive"][0][:, None]).sum() / (norm * 4)
    np.testing.assert_allclose(float(_np(parts["cls_loss"])), cls_ref, rtol=1e-4)
    np.testing.assert_allclose(float(_np(parts["box_loss"])), box_ref, rtol=1e-4)


@pytest.mark.parametrize("box_loss", ["huber", "ciou"])
def test_head_loss_zero_when_masked(box_loss):
    head, y_true, y_pred = _head_case(box_loss)
    parts = head.compute_loss(y_true, y_pred, np.zeros(2, np.float32), {})
    assert float(_np(parts["cls_loss"])) == 0.0
    assert float(_np(parts["box_loss"])) == 0.0
    full = head.compute_loss(y_true, y_pred, np.ones(2, np.float32), {})
    assert float(_np(full["box_loss"])) > 0.0
    assert _np(full["cls_loss"]).dtype == np.float32
