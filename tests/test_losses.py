"""Tests of effdet_tf.losses and the masked head loss."""
import numpy as np
import pytest
from keras import ops

from effdet_tf import losses
from effdet_tf.anchors import generate_anchors
from effdet_tf.box_coder import decode_boxes
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


def _varifocal_reference(q, logit, alpha=0.75, gamma=2.0):
    p = 1 / (1 + np.exp(-logit))
    bce = -(q * np.log(p) + (1 - q) * np.log(1 - p))
    return np.where(q > 0, q, alpha * p ** gamma) * bce


def test_varifocal_known_values():
    """Positives weigh their IoU target, negatives alpha * p**gamma (VarifocalNet)."""
    np.testing.assert_allclose(_np(losses.varifocal_loss(np.zeros(1), np.zeros(1))),
                               [0.75 * 0.5 ** 2 * np.log(2)], rtol=1e-6)
    q = np.array([0.0, 0.0, 0.8, 0.3, 1.0], np.float32)
    logits = np.array([2.0, -3.0, 1.0, -1.0, 0.0], np.float32)
    np.testing.assert_allclose(_np(losses.varifocal_loss(q, logits)),
                               _varifocal_reference(q, logits), rtol=1e-5)
    # A positive's loss is least where its score equals its IoU target, not at score 1.
    grid = np.linspace(-4, 4, 801, dtype=np.float32)
    best = grid[np.argmin(_np(losses.varifocal_loss(np.full_like(grid, 0.7), grid)))]
    assert abs(1 / (1 + np.exp(-best)) - 0.7) < 0.01
    assert np.isfinite(_np(losses.varifocal_loss(np.zeros(2), np.array([100.0, -100.0])))).all()


def test_paired_iou_known_values():
    a = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 2, 2]], np.float32)
    b = np.array([[0, 0, 2, 2], [1, 0, 3, 2], [4, 0, 6, 2]], np.float32)
    np.testing.assert_allclose(_np(losses.paired_iou(a, b)), [1.0, 1 / 3, 0.0], atol=1e-6)


def _head_case(box_loss="huber", cls_loss="focal"):
    head = DetectionHead(num_classes=3, image_size=128, box_loss=box_loss, cls_loss=cls_loss,
                         name="h")
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


def test_head_varifocal_loss_matches_reference():
    """With `cls_loss="varifocal"`, a positive's class target is the IoU of its decoded
    predicted box with its matched object; ignored anchors and other examples add nothing."""
    head, y_true, y_pred = _head_case(cls_loss="varifocal")
    mask = np.array([0.0, 1.0], np.float32)
    parts = head.compute_loss(y_true, y_pred, mask, {})
    anchors = generate_anchors(128)
    match = match_anchors(anchors, y_true["boxes"], y_true["classes"])
    targets = {k: _np(v) for k, v in encode_targets(anchors, match, 3).items()}
    pred = _np(decode_boxes(y_pred["box_deltas"][1], anchors))
    true = _np(match["matched_boxes"])[1]
    inter = (np.clip(np.minimum(pred[:, 2:], true[:, 2:]) - np.maximum(pred[:, :2], true[:, :2]),
                     0, None)).prod(axis=1)
    areas = [np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1) for b in (pred, true)]
    iou = inter / (areas[0] + areas[1] - inter + 1e-7)
    positive = targets["positive"][1].astype(np.float32)
    assert positive.sum() > 0
    quality = targets["class_targets"][1] * (iou * positive)[:, None]
    weight = 1.0 - targets["ignore"][1].astype(np.float32)
    ref = (_varifocal_reference(quality, y_pred["class_logits"][1]) * weight[:, None]).sum()
    norm = targets["num_positives"][1] + 1.0
    np.testing.assert_allclose(float(_np(parts["cls_loss"])), ref / norm, rtol=1e-4)
    focal = _head_case()[0].compute_loss(y_true, y_pred, mask, {})
    assert abs(float(_np(focal["cls_loss"])) - ref / norm) > 1e-3  # not the focal loss
    np.testing.assert_allclose(float(_np(parts["box_loss"])), float(_np(focal["box_loss"])))


@pytest.mark.parametrize("box_loss, cls_loss", [("huber", "focal"), ("ciou", "focal"),
                                                ("huber", "varifocal"), ("ciou", "varifocal")])
def test_head_loss_zero_when_masked(box_loss, cls_loss):
    head, y_true, y_pred = _head_case(box_loss, cls_loss)
    parts = head.compute_loss(y_true, y_pred, np.zeros(2, np.float32), {})
    assert float(_np(parts["cls_loss"])) == 0.0
    assert float(_np(parts["box_loss"])) == 0.0
    full = head.compute_loss(y_true, y_pred, np.ones(2, np.float32), {})
    assert float(_np(full["box_loss"])) > 0.0
    assert _np(full["cls_loss"]).dtype == np.float32
