"""The classification and multilabel heads: their losses against numpy, masks, options,
thresholds that survive save / load, and the two feature sources."""
import keras
import numpy as np
import pytest

import effdet_tf
from effdet_tf import batch_schema as schema
from effdet_tf.classification_head import ClassificationHead
from effdet_tf.errors import ConfigError
from effdet_tf.multilabel_head import MultiLabelHead
from tests.backbones import tiny_bn_backbone

SIZE = 128


def _targets(name, labels, mask):
    return {schema.labels_key(name): np.asarray(labels, np.float32),
            schema.label_mask_key(name): np.asarray(mask, np.float32)}


def test_classification_loss_matches_numpy():
    """Smoothed, class-weighted cross-entropy; unknown rows and unrouted examples add nothing."""
    head = ClassificationHead(num_classes=3, image_size=SIZE, name="c", label_smoothing=0.1,
                              class_weights=[1.0, 2.0, 0.5])
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [3.0, 3.0, 3.0], [1.0, 2.0, 3.0]],
                      np.float32)
    labels = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    mask = np.ones_like(labels)
    mask[2] = 0.0  # unknown class
    routed = np.array([1, 1, 1, 0], np.float32)  # the last example is another head's
    loss = float(head.compute_loss(_targets("c", labels, mask), {"logits": logits}, routed,
                                   {})["ce_loss"])
    targets = labels * 0.9 + 0.1 / 3
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    per_example = -(targets * log_probs).sum(axis=1)
    weights = np.array([1.0, 2.0, 0.5, 1.0]) * np.array([1, 1, 0, 0])
    assert loss == pytest.approx((per_example * weights).sum() / weights.sum(), rel=1e-5)


def test_multilabel_loss_ignores_unknown_tags():
    """Changing a label where its mask is 0 changes nothing; a positive weight scales positives."""
    head = MultiLabelHead(num_classes=3, image_size=SIZE, name="t")
    logits = {"logits": np.array([[2.0, -1.0, 0.5], [0.0, 0.3, -2.0]], np.float32)}
    labels = np.array([[1, 0, 1], [0, 1, 0]], np.float32)
    mask = np.array([[1, 1, 0], [1, 1, 1]], np.float32)
    routed = np.ones(2, np.float32)
    base = float(head.compute_loss(_targets("t", labels, mask), logits, routed, {})["bce_loss"])
    flipped = labels.copy()
    flipped[0, 2] = 0.0
    again = float(head.compute_loss(_targets("t", flipped, mask), logits, routed, {})["bce_loss"])
    assert again == pytest.approx(base)
    x, y = logits["logits"], labels
    bce = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
    assert base == pytest.approx((bce * mask).sum() / mask.sum(), rel=1e-5)  # 5 known values
    weighted = MultiLabelHead(num_classes=3, image_size=SIZE, name="w", positive_weight=3.0)
    heavy = float(weighted.compute_loss(_targets("w", labels, mask), logits, routed,
                                        {})["bce_loss"])
    expected = (bce * mask * (1 + 2 * y)).sum() / mask.sum()
    assert heavy == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("tags", [3, 33])
def test_multilabel_loss_is_a_mean_per_known_value(tags):
    """Uninformed logits cost log 2 whatever the number of tags (a sum over tags would cost
    `tags * log 2` and outweigh a softmax head on the shared layers), and unrouted
    examples and unknown values do not dilute the mean."""
    head = MultiLabelHead(num_classes=tags, image_size=SIZE, name="t")
    labels = np.zeros((3, tags), np.float32)
    labels[0, 0] = 1.0
    mask = np.ones((3, tags), np.float32)
    mask[1, 1:] = 0.0  # image 1 knows one tag only
    routed = np.array([1, 1, 0], np.float32)  # image 2 belongs to another head
    zero = {"logits": np.zeros((3, tags), np.float32)}
    loss = float(head.compute_loss(_targets("t", labels, mask), zero, routed, {})["bce_loss"])
    assert loss == pytest.approx(np.log(2.0), rel=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"pool": "p3"}, "pool must be one of"),
    ({"class_weights": [1.0, 2.0]}, "class_weights must be 3 positive"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"top_k": 0}, "top_k"),
])
def test_classification_options_are_checked(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ClassificationHead(num_classes=3, image_size=SIZE, name="c", **kwargs)


@pytest.mark.parametrize("pool", ["c5", "pyramid"])
def test_both_feature_sources_build_and_predict(pool):
    """C5 pooling reads the backbone; pyramid pooling the five BiFPN levels."""
    model = effdet_tf.build_detector(
        heads=[{"name": "c", "num_classes": 5, "kind": "classification",
                "options": {"pool": pool, "top_k": 9}}],
        image_size=SIZE, backbone=tiny_bn_backbone(SIZE), fpn_channels=16, fpn_cells=1,
        head_layers=1)
    head = model.task_heads["c"]
    assert head.feature_source == ("backbone_c5" if pool == "c5" else "pyramid")
    assert len(head.level_bns) == (1 if pool == "c5" else 5)
    out = head.postprocess(model(np.zeros((2, SIZE, SIZE, 3), np.uint8))["c"])
    assert out["top_classes"].shape == (2, 5)  # top_k is clipped to the class count
    np.testing.assert_allclose(np.asarray(out["probabilities"]).sum(axis=1), 1.0, rtol=1e-5)


def test_thresholds_survive_save_and_load(tmp_path):
    """Per-tag thresholds are a weight: saved, reloaded and applied by postprocess."""
    model = effdet_tf.build_detector(
        heads=[{"name": "t", "num_classes": 4, "kind": "multilabel"}], image_size=SIZE,
        backbone=tiny_bn_backbone(SIZE), fpn_channels=16, fpn_cells=1, head_layers=1)
    head = model.task_heads["t"]
    with pytest.raises(ValueError, match="4 values in"):
        head.set_thresholds([0.5, 1.5, 0.5, 0.5])
    head.set_thresholds([0.1, 0.2, 0.9, 0.99])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.task_heads["t"].thresholds.numpy(), [0.1, 0.2, 0.9, 0.99])
    raw = {"logits": np.zeros((1, 4), np.float32)}  # every probability 0.5
    assert np.asarray(loaded.task_heads["t"].postprocess(raw)["tags"]).tolist() == [[1, 1, 0, 0]]


def test_default_pool_per_kind():
    """Classification pools C5 by default (measured better on clothing), tags the pyramid."""
    category = ClassificationHead(num_classes=3, image_size=128, name="category")
    tags = MultiLabelHead(num_classes=4, image_size=128, name="tags")
    assert (category.pool, category.width, category.feature_source) == ("c5", 1280,
                                                                        "backbone_c5")
    assert (tags.pool, tags.width, tags.feature_source) == ("pyramid", 256, "pyramid")
    assert ClassificationHead.from_config(category.get_config()).pool == "c5"
