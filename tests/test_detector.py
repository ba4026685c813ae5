"""Tests of effdet_tf.detector (MultiHeadDetector, build_detector)."""
import json
import pathlib
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import effdet_tf
from effdet_tf.detector import _loss_weights, normalize_heads
from effdet_tf.errors import ConfigError
from effdet_tf.heads import ASSIGNER
from tests.backbones import tiny_bn_backbone
from tests.jax_subprocess import run_under_jax

REPO = pathlib.Path(__file__).resolve().parents[1]
SIZE = 128
NUM_ANCHORS_128 = 3069


def tiny_backbone(size=SIZE, name="tiny"):
    """A fast stand-in backbone: [C3, C4, C5] at strides 8/16/32, with BN."""
    return tiny_bn_backbone(size, name)


def _model(**kwargs):
    kwargs.setdefault("heads", {"a": 3, "b": 2})
    return effdet_tf.build_detector(image_size=SIZE, backbone=tiny_backbone(), **kwargs)


def _batch(dataset_id=(0, 1)):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (len(dataset_id), SIZE, SIZE, 3)).astype(np.float32)
    boxes = np.full((len(dataset_id), 3, 4), -1, np.float32)
    classes = np.full((len(dataset_id), 3), -1, np.int32)
    boxes[:, 0] = [10, 20, 60, 70]
    boxes[:, 1] = [64, 64, 120, 100]
    classes[:, 0] = 1
    classes[:, 1] = 0
    y = {"boxes": boxes, "classes": classes, "dataset_id": np.array(dataset_id, np.int32)}
    return images, y


@pytest.fixture(name="model", scope="module")
def fixture_model():
    return _model()


def test_outputs_and_attributes(model):
    """Output dict, dtypes, attributes, uint8 input and decoding."""
    images, _ = _batch()
    out = model(images)
    assert set(out) == {"a", "b"}
    assert tuple(out["a"]["class_logits"].shape) == (2, NUM_ANCHORS_128, 3)
    assert tuple(out["b"]["class_logits"].shape) == (2, NUM_ANCHORS_128, 2)
    assert tuple(out["b"]["box_deltas"].shape) == (2, NUM_ANCHORS_128, 4)
    assert all(v.dtype == "float32" for d in out.values() for v in d.values())
    assert model.head_names == ["a", "b"]
    assert model.num_classes == {"a": 3, "b": 2}
    assert all(h.anchors.shape == (NUM_ANCHORS_128, 4) for h in model.task_heads.values())
    assert not hasattr(model, "anchors")  # anchors belong to the detection heads
    assert model.backbone.name == "tiny"
    out_u8 = model(images.astype(np.uint8))
    out_f = model(images.astype(np.uint8).astype(np.float32))
    np.testing.assert_allclose(out_u8["a"]["class_logits"], out_f["a"]["class_logits"])
    decoded = {h: model.task_heads[h].postprocess(out[h]) for h in ("a", "b")}
    assert tuple(decoded["a"]["boxes"].shape) == (2, NUM_ANCHORS_128, 4)
    assert tuple(decoded["b"]["scores"].shape) == (2, NUM_ANCHORS_128, 2)
    boxes = decoded["a"]["boxes"].numpy()
    assert boxes.min() >= 0 and boxes.max() <= SIZE


def test_feature_pyramid_shares_the_detector_weights(model):
    """The trunk model gives P3..P7 and holds the detector's own variables."""
    trunk = model.feature_pyramid
    images, _ = _batch()
    levels = trunk(images)
    assert [tuple(p.shape[1:3]) for p in levels] == [(SIZE // 2 ** l,) * 2 for l in range(3, 8)]
    head_ids = {id(v) for h in model.task_heads.values() for v in h.weights}
    trunk_ids = {id(v) for v in trunk.weights}
    assert trunk_ids and trunk_ids <= {id(v) for v in model.weights}
    assert not trunk_ids & head_ids


def test_metrics_listed_and_reset(model):
    """Per-head loss metrics are in model.metrics, sum up, and reset."""
    images, y = _batch()
    loss = model.compute_loss(images, y, model(images))
    assert loss.dtype == "float32" and np.isfinite(loss.numpy())
    names = [m.name for m in model.metrics]
    for head in ("a", "b"):
        for suffix in ("loss", "cls_loss", "box_loss"):
            assert f"{head}_{suffix}" in names
    assert float(model.a_loss.result()) > 0
    np.testing.assert_allclose(float(model.a_loss.result()),
                               float(model.a_cls_loss.result()) + float(model.a_box_loss.result()),
                               rtol=1e-5)
    model.reset_metrics()
    assert float(model.a_loss.count.numpy()) == 0.0


def test_masked_heads_zero_gradients(model):
    """A batch of dataset A gives head B exactly zero gradients and head A nonzero ones."""
    images, y = _batch(dataset_id=(0, 0))
    with tf.GradientTape() as tape:
        loss = model.compute_loss(images, y, model(images, training=True))
    head_a = model.task_heads["a"].trainable_variables
    head_b = model.task_heads["b"].trainable_variables
    grads = tape.gradient(loss, head_a + head_b)
    grads_a, grads_b = grads[:len(head_a)], grads[len(head_a):]
    assert all(g is None or not np.any(g.numpy()) for g in grads_b)
    # Head A learns (some BN of levels without positives may get none: only check overall
    # and the prediction layers, which see every anchor).
    assert all(g is not None for g in grads_a)
    assert sum(float(np.abs(g.numpy()).sum()) for g in grads_a) > 0
    for var, grad in zip(head_a, grads_a):
        if "predict" in var.path:
            assert np.any(grad.numpy()), var.path


def test_loss_sums_heads(model):
    model.reset_metrics()
    images, y = _batch(dataset_id=(0, 1))
    total = float(model.compute_loss(images, y, model(images)))
    np.testing.assert_allclose(total, float(model.a_loss.result()) + float(model.b_loss.result()),
                               rtol=1e-6)
    assert float(model.b_loss.result()) > 0


def test_shared_loss_normalizer(model):
    """'shared': every detection head divides by all heads' positives + 1, not its own."""
    images, y = _batch(dataset_id=(0, 1, 1))
    y_pred = model(images)
    mask = model.head_mask(y)
    context = {}
    own = {name: float(head.positive_count(y, y_pred[name], mask[:, i], context))
           for i, (name, head) in enumerate(model.task_heads.items())}
    assert 0 < own["a"] < own["b"]  # head b has two examples, a one
    default, parts = model.loss_normalizer, {}
    assert default == "shared"
    for normalizer in ("per_head", "shared"):
        model.reset_metrics()
        model.loss_normalizer = normalizer
        total = float(model.compute_loss(images, y, y_pred))
        parts[normalizer] = {h: float(getattr(model, f"{h}_loss").result()) for h in own}
        np.testing.assert_allclose(total, sum(parts[normalizer].values()), rtol=1e-5)
    model.loss_normalizer = default
    model.reset_metrics()
    shared = sum(own.values()) + 1.0
    for head, count in own.items():
        np.testing.assert_allclose(parts["shared"][head],
                                   parts["per_head"][head] * (count + 1.0) / shared, rtol=1e-5)


def test_anchor_assigner(model):
    """'atss' and 'tal' assign by effdet_tf.atss and effdet_tf.tal (other positives, other
    loss); unknown ones fail."""
    images, y = _batch(dataset_id=(0, 1, 1))
    y_pred = model(images)
    assert model.anchor_assigner == "iou"
    head = model.task_heads["a"]
    counts, losses = {}, {}
    for assigner in ("iou", "atss", "tal"):
        model.anchor_assigner = assigner
        counts[assigner] = float(head.positive_count(y, y_pred["a"], np.ones(3, np.float32),
                                                     {ASSIGNER: assigner}))
        losses[assigner] = float(model.compute_loss(images, y, y_pred))
    for other in ("atss", "tal"):
        assert counts[other] > 0 and counts[other] != counts["iou"]
        assert np.isfinite(losses[other]) and losses[other] != losses["iou"]
    model.anchor_assigner = "nearest"
    with pytest.raises(ConfigError, match="anchor assigner"):
        model.compute_loss(images, y, y_pred)
    model.anchor_assigner = "iou"
    model.reset_metrics()


def test_head_metrics_skip_batches_without_the_head(model):
    """A batch with no example of a head leaves that head's running loss untouched, so a
    validation pass over single-dataset batches averages each head over its own examples."""
    model.reset_metrics()
    images, y = _batch(dataset_id=(0, 0))
    y_pred = model(images)
    model.compute_loss(images, y, y_pred)
    alone = float(model.a_loss.result())
    assert float(model.b_loss.count.numpy()) == 0.0
    other_images, other_y = _batch(dataset_id=(1, 1))
    model.compute_loss(other_images, other_y, model(other_images))
    np.testing.assert_allclose(float(model.a_loss.result()), alone, rtol=1e-6)
    assert float(model.a_loss.count.numpy()) == 1.0 and float(model.b_loss.result()) > 0
    model.reset_metrics()


def test_head_loss_weights_resolution():
    specs = normalize_heads({"a": 1, "b": 2, "c": 3})
    assert _loss_weights(specs, None) == [1.0, 1.0, 1.0]
    assert _loss_weights(specs, {"b": 0.5}) == [1.0, 0.5, 1.0]
    assert _loss_weights(specs, [2, 1, 0]) == [2.0, 1.0, 0.0]
    with pytest.raises(ConfigError, match="3 heads"):
        _loss_weights(specs, [1.0])


def test_frozen_backbone_bn_stats():
    """A frozen backbone keeps its BN statistics in a training step; BiFPN BN updates."""
    model = _model(freeze_backbone=True)
    assert not model.backbone.trainable and not model.backbone.trainable_weights
    backbone_bn = model.backbone.get_layer("stem_bn")
    bifpn_bn = model.get_layer("bifpn_cell0_p6_td_bn")
    before = [v.numpy().copy() for v in backbone_bn.non_trainable_weights]
    bifpn_before = [v.numpy().copy() for v in bifpn_bn.non_trainable_weights]
    images, y = _batch()
    optimizer = keras.optimizers.SGD(0.01)
    with tf.GradientTape() as tape:
        loss = model.compute_loss(images, y, model(images, training=True))
    variables = model.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    for old, new in zip(before, backbone_bn.non_trainable_weights):
        np.testing.assert_array_equal(old, new.numpy())
    assert any(np.any(old != new.numpy())
               for old, new in zip(bifpn_before, bifpn_bn.non_trainable_weights))


def test_config_round_trip_and_keras_file(model, tmp_path):
    """get_config is JSON-able and a .keras file reloads with identical outputs."""
    config = model.get_config()
    assert json.loads(json.dumps(config))["heads"][1] == {"name": "b", "num_classes": 2,
                                                         "kind": "detection", "options": {}}
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, effdet_tf.MultiHeadDetector)
    images, _ = _batch()
    out, out2 = model(images), loaded(images)
    for head in ("a", "b"):
        for key in ("class_logits", "box_deltas"):
            np.testing.assert_array_equal(out[head][key].numpy(), out2[head][key].numpy())
    assert loaded.head_names == ["a", "b"]
    loaded_config = loaded.get_config()
    assert json.dumps(loaded_config, sort_keys=True) == json.dumps(config, sort_keys=True), \
        [k for k in config if loaded_config[k] != config[k]]  # load_model ran from_config


def test_head_options_survive_save_and_load(tmp_path):
    """A head's options (here its box loss weight) are part of the saved model."""
    model = _model(heads=[{"name": "a", "num_classes": 3, "options": {"box_loss_weight": 7.0}},
                          {"name": "b", "num_classes": 2}])
    assert model.task_heads["a"].box_loss_weight == 7.0
    assert model.task_heads["b"].box_loss_weight is None
    path = tmp_path / "options.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.task_heads["a"].box_loss_weight == 7.0
    assert loaded.head_specs[0].options == {"box_loss_weight": 7.0}
    with pytest.raises(ConfigError, match="head 'a' .detection.: bad options"):
        _model(heads=[{"name": "a", "num_classes": 3, "options": {"no_such_option": 1}}])


def test_group_norm_heads_saved_with_the_model(tmp_path):
    """`head_norm="group"` builds group-normalised detection heads and is saved."""
    model = _model(head_norm="group")
    norms = model.task_heads["b"].box_bns
    assert all(isinstance(l, keras.layers.GroupNormalization) for l in norms)
    assert not [l for l in model.task_heads["a"]._flatten_layers()  # pylint: disable=protected-access  # every sublayer
                if isinstance(l, keras.layers.BatchNormalization)]
    path = tmp_path / "group.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.head_norm == "group" and loaded.get_config()["head_norm"] == "group"
    images, _ = _batch()
    out, out2 = model(images), loaded(images)
    np.testing.assert_array_equal(out["a"]["class_logits"].numpy(),
                                  out2["a"]["class_logits"].numpy())
    old = loaded.get_config()
    del old["head_norm"]  # a model saved before the setting existed has BN heads
    assert effdet_tf.MultiHeadDetector.from_config(old).head_norm == "batch"
    with pytest.raises(ConfigError, match="head norm must be one of"):
        _model(head_norm="layer")


def test_varifocal_class_loss_saved_with_the_model(tmp_path):
    """`cls_loss="varifocal"` reaches every detection head and survives a save; models
    saved before the setting existed load with focal loss."""
    model = _model(cls_loss="varifocal")
    assert {model.task_heads[name].cls_loss for name in ("a", "b")} == {"varifocal"}
    path = tmp_path / "vfl.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.cls_loss == "varifocal"
    assert loaded.task_heads["b"].cls_loss == "varifocal"
    old = loaded.get_config()
    del old["cls_loss"]
    assert effdet_tf.MultiHeadDetector.from_config(old).task_heads["a"].cls_loss == "focal"


def test_backbone_weights_file(tmp_path):
    source = tiny_backbone()
    path = str(tmp_path / "bb.weights.h5")
    source.save_weights(path)
    model = effdet_tf.build_detector(heads={"a": 1}, image_size=SIZE, backbone=tiny_backbone(),
                                     backbone_weights=path)
    for old, new in zip(source.get_weights(), model.backbone.get_weights()):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("kwargs, match", [
    ({"backbone": "resnet50"}, "unknown backbone"),
    ({"backbone_weights": "/nonexistent.weights.h5"}, "does not exist"),
    ({"heads": {}}, "at least one head"),
    ({"heads": [{"name": "a", "num_classes": 1}, {"name": "a", "num_classes": 2}]}, "unique"),
    ({"head_loss_weights": {"zzz": 1.0}}, "unknown heads"),
    ({"box_loss": "l1"}, "box_loss"),
    ({"cls_loss": "qfl"}, "cls_loss must be one of"),
    ({"image_size": 100}, "multiple of 128"),
])
def test_config_errors(kwargs, match):
    """Bad arguments raise ConfigError with a clear message."""
    kwargs.setdefault("heads", {"a": 1})
    kwargs.setdefault("backbone", tiny_backbone())
    with pytest.raises(ConfigError, match=match):
        effdet_tf.build_detector(**kwargs)


def test_backbone_with_wrong_strides():
    inputs = keras.Input((SIZE, SIZE, 3))
    feats = [keras.layers.Conv2D(4, 1, strides=s)(inputs) for s in (4, 8, 16)]
    with pytest.raises(ConfigError, match="stride"):
        effdet_tf.build_detector(heads={"a": 1}, image_size=SIZE,
                                 backbone=keras.Model(inputs, feats))


def test_mixed_precision_outputs_float32():
    """Under mixed_float16 the outputs and the loss stay float32."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _model(box_loss="ciou")
        images, y = _batch()
        out = model(images, training=True)
        assert all(v.dtype == "float32" for d in out.values() for v in d.values())
        assert model.get_layer("bifpn_cell0_p6_td_conv").compute_dtype == "float16"
        loss = model.compute_loss(images, y, out)
        assert loss.dtype == "float32" and np.isfinite(loss.numpy())
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_cspdarknet53_backbone():
    pytest.importorskip("effdet_tf.backbones.cspdarknet53")
    model = effdet_tf.build_detector(heads={"a": 3, "b": 2}, image_size=512)
    assert tuple(model.outputs[0].shape) in ((None, 49104, 3), (None, 49104, 4))
    assert model.task_heads["a"].anchors.shape == (49104, 4)
    assert model.backbone.count_params() == 26_652_512
    small = effdet_tf.build_detector(heads={"a": 3}, image_size=SIZE, freeze_backbone=True)
    out = small(np.zeros((1, SIZE, SIZE, 3), np.uint8))
    assert tuple(out["a"]["class_logits"].shape) == (1, NUM_ANCHORS_128, 3)
    assert not small.backbone.trainable_weights


JAX_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import keras
    sys.path.insert(0, sys.argv[1])
    from test_detector import _batch, tiny_backbone
    import effdet_tf
    assert keras.backend.backend() == "jax"
    # One BiFPN cell and one head layer: the same code paths, a third of the compile time.
    heads = [{"name": "a", "num_classes": 3}, {"name": "b", "num_classes": 2},
             {"name": "c", "num_classes": 4, "kind": "classification"},
             {"name": "d", "num_classes": 5, "kind": "multilabel"}]
    model = effdet_tf.build_detector(heads=heads, image_size=128,
                                     backbone=tiny_backbone(), fpn_cells=1, head_layers=1)
    images, y = _batch()
    for name in ("c", "d"):  # labels of example 0 (example 1's are missing)
        y.update(model.task_heads[name].example_targets(2, seed=1))
    y["head_mask"] = np.array([[1, 0, 1, 1], [0, 1, 0, 0]], np.float32)
    # fit runs the forward pass and compute_loss (jitted, metrics in the stateless scope);
    # an eager compute_loss call as well would add ~10 s of op-by-op compilation.
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    history = model.fit(images, y, batch_size=1, epochs=1, verbose=0)
    out = model(images)
    decoded = {h: model.task_heads[h].postprocess(out[h]) for h in ("a", "c", "d")}
    print("RESULT" + json.dumps({
        "top": list(decoded["c"]["top_classes"].shape),
        "tags": list(decoded["d"]["tags"].shape),
        "shape": list(out["a"]["class_logits"].shape),
        "dtype": str(out["b"]["box_deltas"].dtype),
        "boxes": list(decoded["a"]["boxes"].shape),
        "history": {k: v[-1] for k, v in history.history.items()},
        "steps": int(model.optimizer.iterations)}))
""")


@pytest.mark.slow
def test_jax_backend_subprocess():
    """Build, fit 2 steps with per-head metrics, forward and decode under KERAS_BACKEND=jax,
    with detection, classification and multilabel heads in one step."""
    result = run_under_jax(JAX_SCRIPT, [str(REPO / "tests")], timeout=400)
    assert result["shape"] == [2, NUM_ANCHORS_128, 3]
    assert result["dtype"] == "float32"
    assert result["boxes"] == [2, NUM_ANCHORS_128, 4]
    assert result["steps"] == 2
    assert result["top"] == [2, 2] and result["tags"] == [2, 5]
    for key in ("loss", "a_loss", "b_loss", "a_cls_loss", "a_box_loss", "b_cls_loss",
                "b_box_loss", "c_ce_loss", "d_bce_loss"):
        assert key in result["history"] and result["history"][key] > 0, result["history"]
