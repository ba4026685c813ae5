"""Tests of effdet_tf.heads and effdet_tf.detection_head."""
import math

import keras
import numpy as np
import pytest

from effdet_tf.errors import ConfigError
from effdet_tf.detection_head import DetectionHead
from effdet_tf.heads import HeadSpec


def _pyramid(size=128, channels=64):
    return [keras.Input((size // 2 ** l, size // 2 ** l, channels)) for l in range(3, 8)]


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "bad name", "num_classes": 2}, "letter"),
    ({"name": "a", "num_classes": 0}, "positive"),
    ({"name": "a", "num_classes": 2, "kind": "segmentation"}, "unknown"),
])
def test_head_spec_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        HeadSpec(**kwargs)


def test_detection_head_outputs_and_sharing():
    """Output shapes, shared convs with per-level BN, prior bias, level order of the anchors."""
    head = DetectionHead(num_classes=5, image_size=128, name="fruits")
    inputs = _pyramid()
    out = head(inputs)
    assert tuple(out["class_logits"].shape) == (None, 3069, 5)
    assert tuple(out["box_deltas"].shape) == (None, 3069, 4)
    # Convs shared across the 5 levels, BN per level: 3 layers x 2 nets x 5 levels.
    assert len(head.class_convs) == 3 and len(head.class_bns) == 15 and len(head.box_bns) == 15
    bias = head.class_predict.bias.numpy() if hasattr(head.class_predict.bias, "numpy") \
        else keras.ops.convert_to_numpy(head.class_predict.bias)
    np.testing.assert_allclose(bias, -math.log(0.99 / 0.01), rtol=1e-6)
    assert bias.shape == (9 * 5,)
    model = keras.Model(inputs, out)
    feats = [np.random.default_rng(0).normal(size=(2,) + tuple(i.shape[1:])).astype(np.float32)
             for i in inputs]
    res = model(feats)
    assert keras.ops.convert_to_numpy(res["class_logits"]).dtype == np.float32
    # The first level's first location maps to anchors 0..8: logits from one pixel of P3.
    p3_only = model([feats[0]] + [np.zeros_like(f) for f in feats[1:]])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(p3_only["class_logits"])[:, :2304],
                               keras.ops.convert_to_numpy(res["class_logits"])[:, :2304],
                               rtol=1e-5, atol=1e-5)


def test_group_norm_head_does_not_depend_on_the_batch():
    """With `norm="group"` the head's output on an image is the same whatever images
    share its batch, in training and inference mode alike; with BN (the default) it is
    not, in training mode."""
    rng = np.random.default_rng(1)
    feats = [rng.normal(size=(3, 128 // 2 ** l, 128 // 2 ** l, 64)).astype(np.float32)
             for l in range(3, 8)]
    for f in feats:
        f[2] = f[2] * 5.0 + 3.0  # a very different partner

    def first_image(head, rows, training):
        out = head([f[rows] for f in feats], training=training)
        return np.concatenate([keras.ops.convert_to_numpy(out[k])[0].ravel()
                               for k in ("class_logits", "box_deltas")])

    for norm in ("batch", "group"):
        head = DetectionHead(num_classes=3, image_size=128, norm=norm, name=f"h_{norm}")
        gap = np.abs(first_image(head, [0, 1], True) - first_image(head, [0, 2], True)).max()
        kinds = {type(l).__name__ for l in head.class_bns + head.box_bns}
        if norm == "batch":
            assert kinds == {"BatchNormalization"} and gap > 1e-2
        else:
            assert kinds == {"GroupNormalization"} and head.class_bns[0].groups == 8
            assert gap < 1e-4
            np.testing.assert_allclose(first_image(head, [0, 2], False),
                                       first_image(head, [0, 1], True), rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="head norm"):
        DetectionHead(num_classes=2, image_size=128, norm="layer")


def test_bad_box_loss():
    with pytest.raises(ConfigError, match="box_loss"):
        DetectionHead(num_classes=2, image_size=128, box_loss="giou")


def test_decode_identity_deltas():
    head = DetectionHead(num_classes=2, image_size=128, name="h")
    num = head.anchors.shape[0]
    decoded = head.postprocess({"class_logits": np.zeros((1, num, 2), np.float32),
                           "box_deltas": np.zeros((1, num, 4), np.float32)})
    boxes = keras.ops.convert_to_numpy(decoded["boxes"])[0]
    np.testing.assert_allclose(boxes, np.clip(head.anchors, 0, 128), atol=1e-4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(decoded["scores"]), 0.5)
