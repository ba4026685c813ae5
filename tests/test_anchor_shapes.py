"""Anchor aspect ratios as a model setting (`model.anchor_aspect_ratios`) and a head
option (`aspect_ratios`): outputs, matching, loss, saving, and config errors."""
import keras
import numpy as np
import pytest

import effdet_tf
from effdet_tf.config import config_from_dict
from effdet_tf.errors import ConfigError
from tests.backbones import tiny_bn_backbone

SIZE = 128
LOCATIONS_128 = 16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1
FIVE = [1.0, 2.0, 0.5, 4.0, 0.25]


def _model(**kwargs):
    return effdet_tf.build_detector(image_size=SIZE, backbone=tiny_bn_backbone(SIZE),
                                    **kwargs)


def _batch():
    """Two images with one tall box (16 x 64 px, centred on a P3 location) each."""
    images = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    boxes = np.full((2, 2, 4), -1, np.float32)
    classes = np.full((2, 2), -1, np.int32)
    boxes[:, 0] = [52, 28, 68, 92]
    classes[:, 0] = 1
    return images, {"boxes": boxes, "classes": classes,
                    "dataset_id": np.array([0, 1], np.int32)}


def test_model_ratios_and_head_option(tmp_path):
    """The model setting reaches every detection head, a head's option overrides it, each
    head matches with its own anchors in one batch, and both survive a save."""
    model = _model(heads=[{"name": "a", "num_classes": 3},
                          {"name": "b", "num_classes": 2, "options": {"aspect_ratios": [1]}}],
                   anchor_aspect_ratios=FIVE)
    head_a, head_b = model.task_heads["a"], model.task_heads["b"]
    assert head_a.aspect_ratios == tuple(FIVE) and head_b.aspect_ratios == (1.0,)
    images, y = _batch()
    out = model(images)
    assert tuple(out["a"]["class_logits"].shape) == (2, 15 * LOCATIONS_128, 3)
    assert tuple(out["b"]["box_deltas"].shape) == (2, 3 * LOCATIONS_128, 4)
    assert head_a.anchors.shape == (15 * LOCATIONS_128, 4)
    assert tuple(head_a.postprocess(out["a"])["boxes"].shape) == (2, 15 * LOCATIONS_128, 4)
    loss = float(model.compute_loss(images, y, out))
    assert np.isfinite(loss) and loss > 0

    default = _model(heads={"a": 3, "b": 2})
    assert default.task_heads["a"].aspect_ratios == (1.0, 2.0, 0.5)
    ones = np.ones(2, np.float32)
    tall_positives = {
        name: float(m.task_heads["a"].positive_count(y, m(images)["a"], ones, {}))
        for name, m in (("five", model), ("three", default))}
    # With 4:1 anchors the tall box has anchors at IoU >= 0.5 besides its forced best one.
    assert tall_positives["five"] > tall_positives["three"]

    path = tmp_path / "ratios.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.anchor_aspect_ratios == FIVE
    assert loaded.task_heads["b"].aspect_ratios == (1.0,)
    np.testing.assert_array_equal(loaded(images)["a"]["class_logits"].numpy(),
                                  out["a"]["class_logits"].numpy())
    old = default.get_config()
    del old["anchor_aspect_ratios"]  # a model saved before the setting existed
    rebuilt = effdet_tf.MultiHeadDetector.from_config(old)
    assert rebuilt.task_heads["a"].anchors.shape == (9 * LOCATIONS_128, 4)


BASE = {"data": {"datasets": [{"name": "a", "root": "x"}, {"name": "b", "root": "y"}]}}


def test_config_setting_and_errors():
    """The setting reads as a list of floats; bad ratios fail when the config is read
    (before any data or model work), naming the key or the head."""
    cfg = config_from_dict(BASE, ["model.anchor_aspect_ratios=[1, 2, 0.5, 4, 0.25]"])
    assert cfg.model.anchor_aspect_ratios == FIVE
    assert config_from_dict(BASE).model.anchor_aspect_ratios is None
    with pytest.raises(ConfigError, match=r"model.anchor_aspect_ratios: 0.0 is not a positive"):
        config_from_dict(BASE, ["model.anchor_aspect_ratios=[1, 0]"])
    with pytest.raises(ConfigError, match=r"model.anchor_aspect_ratios: a ratio is given twice"):
        config_from_dict(BASE, ["model.anchor_aspect_ratios=[2, 2]"])
    with_heads = {"heads": [{"name": "a", "options": {"aspect_ratios": []}}],
                  "data": {"datasets": [{"name": "a", "root": "x"}]}}
    with pytest.raises(ConfigError, match=r"heads\[0\].options.aspect_ratios \(a\): expected "
                                          r"a non-empty list"):
        config_from_dict(with_heads)


def test_config_reaches_the_model_training_and_export_build():
    """`train.run_dir.build_model`, the one config -> model rule of training, loading and
    export, builds the configured anchors, and a head's option wins over the model's."""
    from train.run_dir import build_model  # pylint: disable=import-outside-toplevel  # heavy

    cfg = config_from_dict(
        {"heads": [{"name": "a"}, {"name": "b", "options": {"aspect_ratios": [1, 3]}}],
         "data": {"datasets": [{"name": "a", "root": "x"}, {"name": "b", "root": "y"}],
                  "image_size": SIZE}},
        ["model.anchor_aspect_ratios=[1, 2, 0.5, 4, 0.25]"])
    model = build_model(cfg, {"a": {"names": ["p", "q"]}, "b": {"names": ["r"]}})
    assert model.task_heads["a"].anchors.shape == (15 * LOCATIONS_128, 4)
    assert model.task_heads["b"].anchors.shape == (6 * LOCATIONS_128, 4)
