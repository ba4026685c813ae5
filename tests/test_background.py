"""Tests of `background_for`: a dataset's images training another detection head as
background only (config, routing in the pipeline, and the detection loss)."""
import numpy as np
import pytest

from data_pipelines.pipeline import build_eval_dataset, build_train_dataset
from effdet_tf.anchors import generate_anchors
from effdet_tf.config import config_from_dict
from effdet_tf.detector import MultiHeadDetector
from effdet_tf.errors import ConfigError
from effdet_tf.heads import BACKGROUND_MASKS
from effdet_tf.targets import encode_targets, match_anchors
from tests.backbones import tiny_backbone
from tests.test_losses import _focal_reference, _head_case, _np
from tests.test_pipeline import fixture_configs  # pylint: disable=unused-import  # fixture

BASE = {"data": {"datasets": [{"name": "a", "root": "x"},
                              {"name": "b", "root": "y", "background_for": ["a"]}],
                 "cross_background": False}}


def test_config_builds_the_background_table():
    """`background_for` gives a `[datasets][heads]` table; without it there is none."""
    cfg = config_from_dict(BASE)
    assert cfg.routes == [[1.0, 0.0], [0.0, 1.0]]
    assert cfg.background_routes == [[0.0, 0.0], [1.0, 0.0]]
    both = config_from_dict(BASE, ["data.datasets.0.background_for=[b]"])
    assert both.background_routes == [[0.0, 1.0], [1.0, 0.0]]
    assert config_from_dict({"data": {"datasets": BASE["data"]["datasets"][:1],
                                      "cross_background": True}}).background_routes is None
    assert both.with_heads(["b"]).data.datasets[0].background_for is None
    assert both.with_heads(["b"]).background_routes is None


def test_cross_background_pairs_every_detection_dataset_with_the_other_heads():
    """`data.cross_background` (the default) makes each detection dataset background for
    the detection heads it does not label; image-level datasets and heads stay out of it."""
    datasets = [{"name": "a", "root": "x"}, {"name": "b", "root": "y"},
                {"name": "c", "root": "z", "format": "image_folder"}]
    cfg = config_from_dict({"data": {"datasets": datasets}})  # on by default
    assert cfg.head_names == ["a", "b", "c"]
    assert cfg.background_routes == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    assert cfg.background_heads(cfg.data.datasets[0]) == ["b"]
    # An explicit background_for adds to it: c's images become background for a.
    more = config_from_dict({"data": {"datasets": datasets, "cross_background": True}},
                            ["data.datasets.2.background_for=[a]"])
    assert more.background_routes[2] == [1.0, 0.0, 0.0]
    assert config_from_dict({"data": {"datasets": datasets, "cross_background": False}}
                            ).background_routes is None


@pytest.mark.parametrize("override, message", [
    ("data.datasets.1.background_for=[c]", "'c' is not a detection head"),
    ("data.datasets.1.background_for=[b]", "dataset 'b' labels head 'b'"),
])
def test_bad_background_names_the_key(override, message):
    """An unknown head, or a dataset's own head, is a one-line error naming the key."""
    with pytest.raises(ConfigError, match=r"data\.datasets\[1\]\.background_for") as err:
        config_from_dict(BASE, [override], source="cfg.yaml")
    assert message in str(err.value)


def test_image_level_head_cannot_take_background():
    """Only detection heads have a background: a classification head is refused."""
    with pytest.raises(ConfigError, match="'b' is not a detection head"):
        config_from_dict({"data": {"datasets": [
            {"name": "a", "root": "x", "background_for": ["b"]},
            {"name": "b", "root": "y", "format": "image_folder"}]}})


def test_pipeline_adds_the_background_mask(configs):
    """Train and eval batches carry `background_mask`, the table's row of each example."""
    routes, background = [[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 0.0]]
    ds = build_train_dataset(configs, image_size=32, max_boxes=6, batch_size=8, seed=0,
                             routes=routes, background=background)
    batch = next(iter(ds))
    ids = batch["dataset_id"].numpy()
    assert set(ids.tolist()) == {0, 1}
    np.testing.assert_array_equal(batch["background_mask"].numpy(),
                                  np.array(background, np.float32)[ids])
    val, _ = build_eval_dataset(configs[0], 0, split="val", image_size=32, max_boxes=4,
                                batch_size=2, routes=routes, background=background)
    np.testing.assert_array_equal(next(iter(val))["background_mask"].numpy(),
                                  [[0, 1], [0, 1]])
    plain = next(iter(build_train_dataset(configs, image_size=32, max_boxes=6, batch_size=2,
                                          seed=0, routes=routes)))
    assert "background_mask" not in plain


def _loss(head, y_true, y_pred, mask, background=None):
    context = {} if background is None else {BACKGROUND_MASKS: {head.name: background}}
    parts = head.compute_loss(y_true, y_pred, np.asarray(mask, np.float32), context)
    return {k: float(_np(v)) for k, v in parts.items()}


@pytest.mark.parametrize("box_loss, cls_loss", [("huber", "focal"), ("ciou", "varifocal")])
def test_background_example_trains_every_anchor_as_negative(box_loss, cls_loss):
    """A background example adds its focal loss against all-zero targets on every anchor,
    whatever its boxes say, and nothing to the box loss or the normaliser."""
    head, y_true, y_pred = _head_case(box_loss, cls_loss)
    own = _loss(head, y_true, y_pred, [1.0, 0.0])
    with_bg = _loss(head, y_true, y_pred, [1.0, 0.0], np.array([0.0, 1.0], np.float32))
    assert with_bg["box_loss"] == pytest.approx(own["box_loss"], rel=1e-6)
    anchors = generate_anchors(128)
    num_positives = float(_np(encode_targets(anchors, match_anchors(
        anchors, y_true["boxes"], y_true["classes"]), 3)["num_positives"])[0])
    logits = y_pred["class_logits"][1]
    if cls_loss == "focal":
        negative = _focal_reference(np.zeros_like(logits), logits).sum()
    else:  # varifocal: a negative's loss is alpha * p^gamma * BCE against 0
        prob = 1 / (1 + np.exp(-logits))
        negative = (0.75 * prob ** 2.0 * -np.log(1 - prob)).sum()
    assert with_bg["cls_loss"] - own["cls_loss"] == pytest.approx(
        negative / (num_positives + 1.0), rel=1e-4)
    # The background example's own boxes (another head's objects) change nothing.
    moved = {**y_true, "boxes": y_true["boxes"][::-1].copy(),
             "classes": y_true["classes"][::-1].copy()}
    moved_pred = {k: np.concatenate([v[1:], v[:1]]) for k, v in y_pred.items()}
    swapped = _loss(head, moved, moved_pred, [0.0, 1.0], np.array([1.0, 0.0], np.float32))
    assert swapped["cls_loss"] == pytest.approx(with_bg["cls_loss"], rel=1e-5)


def test_without_background_the_loss_is_unchanged():
    """An all-zero background mask, or fractional example weights, give the loss of before."""
    head, y_true, y_pred = _head_case()
    weights = [0.5, 1.0]
    plain = _loss(head, y_true, y_pred, weights)
    zero = _loss(head, y_true, y_pred, weights, np.zeros(2, np.float32))
    assert zero == pytest.approx(plain, rel=1e-6)
    assert plain["cls_loss"] > 0 and plain["box_loss"] > 0


def test_detector_routes_background_mask_to_its_head():
    """`background_mask` in the targets reaches the named head only; its metric counts
    a batch that holds only background examples."""
    model = MultiHeadDetector(backbone=tiny_backbone(), heads={"a": 2, "b": 2}, image_size=128,
                              fpn_channels=16, fpn_cells=1, head_layers=1)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 128, 128, 3)).astype(np.float32)
    y = {"boxes": np.array([[[8, 8, 60, 60]], [[20, 30, 100, 90]]], np.float32),
         "classes": np.array([[0], [1]], np.int32),
         "dataset_id": np.array([0, 1], np.int32),
         "head_mask": np.array([[1, 0], [0, 1]], np.float32)}
    out = model(images)
    plain = float(_np(model.compute_loss(images, y, out)))
    both = float(_np(model.compute_loss(
        images, {**y, "background_mask": np.array([[0, 1], [1, 0]], np.float32)}, out)))
    only_a = float(_np(model.compute_loss(
        images, {**y, "background_mask": np.array([[0, 0], [1, 0]], np.float32)}, out)))
    assert plain < only_a < both
    # Both examples are head a's; head b trains on them as background only.
    y_a = {**y, "head_mask": np.array([[1, 0], [1, 0]], np.float32)}
    alone = float(_np(model.compute_loss(images, y_a, out)))
    with_b = float(_np(model.compute_loss(
        images, {**y_a, "background_mask": np.array([[0, 1], [0, 1]], np.float32)}, out)))
    assert with_b > alone
