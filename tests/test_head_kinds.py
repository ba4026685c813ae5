"""The contract every head kind keeps, run for each kind in `effdet_tf.names.HEAD_KINDS`.

A new kind registered there is picked up here without a change: output shapes, a loss
that is zero where its mask is zero, gradients that reach only the heads an example is
routed to, a config round trip and save/load.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

import effdet_tf
from effdet_tf import batch_schema as schema
from effdet_tf.heads import head_class
from effdet_tf.names import HEAD_KINDS
from tests.backbones import tiny_bn_backbone

SIZE, BATCH = 128, 2


def _model(kind):
    return effdet_tf.build_detector(
        heads=[{"name": "a", "num_classes": 2, "kind": kind},
               {"name": "b", "num_classes": 2, "kind": kind}],
        image_size=SIZE, backbone=tiny_bn_backbone(SIZE), fpn_channels=16, fpn_cells=1,
        head_layers=1)


def _targets(model, head_mask):
    targets = {}
    for head in model.task_heads.values():  # image-level kinds have keys per head
        targets.update(head.example_targets(BATCH, seed=1))
    targets[schema.HEAD_MASK] = np.asarray(head_mask, np.float32)
    return targets


@pytest.fixture(name="kind_model", scope="module", params=sorted(HEAD_KINDS))
def fixture_kind_model(request):
    """(kind, a two-head model of that kind, images)."""
    keras.utils.set_random_seed(0)
    images = np.random.default_rng(0).uniform(0, 255, (BATCH, SIZE, SIZE, 3)).astype("float32")
    return request.param, _model(request.param), images


def test_outputs_are_float32_per_head(kind_model):
    """Every head gives a dict of float32 tensors with the batch first."""
    _, model, images = kind_model
    out = model(images)
    assert set(out) == {"a", "b"}
    for head in out.values():
        assert head and all(v.dtype == "float32" and v.shape[0] == BATCH for v in head.values())


def test_loss_is_zero_where_the_mask_is_zero(kind_model):
    """A head's loss over examples it is not routed to is exactly zero."""
    _, model, images = kind_model
    out = model(images)
    targets = _targets(model, [[1, 1], [1, 1]])
    for name, head in model.task_heads.items():
        parts = head.compute_loss(targets, out[name], np.zeros([BATCH], np.float32), {})
        assert set(parts) == set(head.loss_components)
        assert all(float(v) == 0.0 for v in parts.values()), parts
        assert set(head.target_keys) <= set(targets)


def test_gradients_reach_only_the_routed_heads(kind_model):
    """With every example routed to head a, head b's weights get no gradient."""
    _, model, images = kind_model
    targets = _targets(model, [[1, 0], [1, 0]])
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x=images, y=targets, training=True)
    heads = model.task_heads
    variables = heads["a"].trainable_variables + heads["b"].trainable_variables
    grads = dict(zip([v.path for v in variables], tape.gradient(loss, variables)))
    reached = {name: any(grads[v.path] is not None and np.abs(grads[v.path]).sum() > 0
                         for v in heads[name].trainable_variables) for name in heads}
    assert reached == {"a": True, "b": False}


def test_config_round_trip_and_save_load(kind_model, tmp_path):
    """The head rebuilds from its config; the model reloads with the same outputs."""
    kind, model, images = kind_model
    head = model.task_heads["a"]
    config = head.get_config()
    assert head_class(kind).from_config(config).get_config() == config
    path = tmp_path / f"{kind}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [s.kind for s in loaded.head_specs] == [kind, kind]
    out, again = model(images), loaded(images)
    for name in ("a", "b"):
        for key, value in out[name].items():
            np.testing.assert_allclose(np.asarray(again[name][key]), np.asarray(value),
                                       rtol=1e-5, atol=1e-5)


def test_serving_outputs_have_the_batch_first(kind_model):
    """What a head adds to the exported graph is a dict of tensors per example."""
    from export.graph import ServingContext  # pylint: disable=import-outside-toplevel  # TF export

    _, model, images = kind_model
    out = model(images)
    context = ServingContext(score_threshold=0.0, iou_threshold=0.5, max_detections=5,
                             class_names={"a": ["x", "y"], "b": ["x", "y"]}, with_names=True,
                             scale=tf.constant(1.0), pad_xy=tf.zeros([2]),
                             orig_hw=tf.constant([SIZE, SIZE]))
    served = model.task_heads["a"].serving_outputs(out["a"], context)
    assert served and all(int(tf.shape(v)[0]) == BATCH for v in served.values())
