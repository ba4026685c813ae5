"""Tests of effdet_tf.detection_towers: detection heads that share their towers."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import effdet_tf
from effdet_tf.config import config_from_dict
from effdet_tf.detection_towers import TowerPool, tower_pool
from effdet_tf.errors import ConfigError
from tests.backbones import tiny_bn_backbone

SIZE = 128
CONFIG = {"data": {"datasets": [{"name": "a", "root": "x"}, {"name": "b", "root": "y"}]}}


def _model(towers, **kwargs):
    kwargs.setdefault("heads", {"a": 3, "b": 2})
    return effdet_tf.build_detector(image_size=SIZE, backbone=tiny_bn_backbone(SIZE),
                                    head_norm="group", detection_towers=towers, **kwargs)


def _batch(dataset_id):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (len(dataset_id), SIZE, SIZE, 3)).astype(np.float32)
    boxes = np.full((len(dataset_id), 2, 4), -1, np.float32)
    classes = np.full((len(dataset_id), 2), -1, np.int32)
    boxes[:, 0] = [10, 20, 60, 70]
    classes[:, 0] = 1
    return images, {"boxes": boxes, "classes": classes,
                    "dataset_id": np.array(dataset_id, np.int32)}


def _paths(variables):
    return {v.path for v in variables}


@pytest.fixture(name="shared", scope="module")
def fixture_shared():
    return _model("shared")


def test_shared_towers_are_one_set_of_layers(shared):
    """Both heads run the same towers and box conv, each its own class conv, and the
    model holds the shared weights once."""
    head_a, head_b = shared.task_heads["a"], shared.task_heads["b"]
    assert head_a.shares_towers and head_b.shares_towers
    for attr in ("class_convs", "box_convs", "class_bns", "box_bns"):
        assert all(x is y for x, y in zip(getattr(head_a, attr), getattr(head_b, attr)))
    assert head_a.box_predict is head_b.box_predict
    assert head_a.class_predict is not head_b.class_predict
    per_head = _model("per_head")
    assert not per_head.task_heads["a"].shares_towers
    # One head's towers and box conv fewer: what the second head no longer owns.
    own = per_head.task_heads["b"]
    tower_params = sum(int(np.prod(v.shape)) for v in own.weights
                       if "class_predict" not in v.path)
    assert tower_params > 0
    assert shared.count_params() == per_head.count_params() - tower_params
    assert len(_paths(shared.weights)) == len(shared.weights)
    # Shared weights are named for the towers, not for the head that ran them first, so
    # a model of fewer heads (export's single-head copy) finds them by path.
    owners = {v.path.rsplit("/", 1)[0] for v in head_b.weights}
    assert "b/b_class_predict" in owners and "detection_box_predict" in owners
    assert all(o == "b/b_class_predict" or o.startswith("detection_") for o in owners)
    # The same box deltas from both heads, different class logits.
    images, _ = _batch((0, 1))
    out = shared(images)
    np.testing.assert_array_equal(out["a"]["box_deltas"].numpy(), out["b"]["box_deltas"].numpy())
    assert out["a"]["class_logits"].shape[-1] == 3 and out["b"]["class_logits"].shape[-1] == 2


@pytest.mark.parametrize("towers", ["shared", "per_head"])
def test_one_heads_batch_trains_the_shared_towers(towers):
    """A batch of dataset A only: shared towers get gradients through head A, head B's own
    class conv none; per head, none of head B's layers get any."""
    model = _model(towers)
    images, y = _batch((0, 0))
    with tf.GradientTape() as tape:
        loss = model.compute_loss(images, y, model(images, training=True))
    head_b = model.task_heads["b"]
    variables = head_b.trainable_variables
    grads = dict(zip([v.path for v in variables], tape.gradient(loss, variables)))
    moved = {path for path, g in grads.items() if g is not None and np.any(g.numpy())}
    class_predict = {v.path for v in head_b.class_predict.trainable_variables}
    assert not moved & class_predict
    box_predict = {v.path for v in head_b.box_predict.trainable_variables}
    if towers == "shared":
        assert box_predict <= moved
        assert any("class_conv" in path for path in moved)
    else:
        assert not moved


def test_shared_towers_survive_save_and_load(shared, tmp_path):
    """The `.keras` file and a weights file rebuild the sharing and give the same outputs."""
    path = tmp_path / "shared.keras"
    shared.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.detection_towers == "shared"
    assert loaded.task_heads["a"].box_convs[0] is loaded.task_heads["b"].box_convs[0]
    images, _ = _batch((0, 1))
    out, out2 = shared(images), loaded(images)
    for head in ("a", "b"):
        for key in ("class_logits", "box_deltas"):
            np.testing.assert_array_equal(out[head][key].numpy(), out2[head][key].numpy())
    weights = tmp_path / "shared.weights.h5"
    shared.save_weights(weights)
    fresh = _model("shared")
    fresh.load_weights(weights)
    np.testing.assert_array_equal(fresh(images)["b"]["class_logits"].numpy(),
                                  out["b"]["class_logits"].numpy())
    old = loaded.get_config()
    del old["detection_towers"]  # a model saved before the setting: towers per head
    assert effdet_tf.MultiHeadDetector.from_config(old).detection_towers == "per_head"


def test_heads_that_differ_get_towers_of_their_own_kind():
    """A head whose options change its towers or anchors gets shared towers of its own
    settings; image-level heads take none; unknown modes fail in one line."""
    with pytest.raises(ConfigError, match="detection_towers must be one of"):
        _model("merged")
    model = _model("shared", heads=[
        {"name": "a", "num_classes": 3}, {"name": "b", "num_classes": 2},
        {"name": "c", "num_classes": 2, "options": {"aspect_ratios": [1, 2, 0.5, 4, 0.25]}},
        {"name": "d", "num_classes": 2, "options": {"num_layers": 2}},
        {"name": "e", "num_classes": 4, "kind": "classification"}])
    heads = model.task_heads
    assert [heads[h].towers_name for h in "abcd"] == ["detection", "detection",
                                                      "detection2", "detection3"]
    assert heads["a"].box_predict is heads["b"].box_predict
    assert heads["c"].box_predict is not heads["a"].box_predict
    assert len(heads["d"].class_convs) == 2 and not hasattr(heads["e"], "towers_name")
    images, _ = _batch((0, 1))
    assert model(images)["c"]["box_deltas"].shape[1] == 3069 // 9 * 15
    pool = TowerPool()
    first = pool.towers_for(channels=8, num_layers=1, norm="group", anchors_per_location=9)
    assert first is pool.towers_for(channels=8, num_layers=1, norm="group",
                                    anchors_per_location=9)
    assert first.class_convs[0].built and tower_pool("per_head") is None
    with pytest.raises(ConfigError, match="model.detection_towers"):
        config_from_dict(CONFIG, ["model.detection_towers=merged"])
    assert config_from_dict(CONFIG).model.detection_towers == "shared"


def test_shared_towers_export_and_verify(tmp_path, capsys):
    """A run with shared towers exports to SavedModel and ONNX, and Keras, the SavedModel
    and ONNX Runtime agree on its detections (`export.verify`)."""
    import effdet_tf.backbones.cspdarknet53 as csp  # pylint: disable=import-outside-toplevel  # patched below
    from export import onnx as onnx_export  # pylint: disable=import-outside-toplevel  # heavy
    from export import saved_model as sm_export  # pylint: disable=import-outside-toplevel  # heavy
    from export import verify as verify_cli  # pylint: disable=import-outside-toplevel  # heavy
    from tests.backbones import tiny_backbone  # pylint: disable=import-outside-toplevel  # patched in
    from tests.test_export import make_run  # pylint: disable=import-outside-toplevel  # one run writer

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csp, "build_cspdarknet53", tiny_backbone)
        run = make_run(tmp_path / "run", seed=1, overrides=["model.detection_towers=shared"])
        saved_model, onnx_file = str(tmp_path / "sm"), str(tmp_path / "model.onnx")
        assert sm_export.main(["--run", run, "--out", saved_model]) == 0
        assert onnx_export.main(["--run", run, "--out", onnx_file]) == 0
        capsys.readouterr()
        assert verify_cli.main(["--run", run, "--onnx", onnx_file,
                                "--saved-model", saved_model]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "FAIL" not in out
    with open(f"{run}/config.yaml", encoding="utf-8") as stream:
        assert "detection_towers: shared" in stream.read()


def test_fit_says_what_the_towers_do(shared):
    """`train.fit` prints what the towers' mode made of two or more detection heads, and
    nothing for one."""
    from train.fit import towers_line  # pylint: disable=import-outside-toplevel  # heavy

    assert towers_line(shared).startswith("detection towers (class tower, box tower and box "
                                          "prediction; each head keeps its class "
                                          "prediction): a, b share one (")
    assert "a, b each have their own" in towers_line(_model("per_head"))
    mixed = _model("shared", heads=[{"name": "a", "num_classes": 3},
                                    {"name": "b", "num_classes": 2},
                                    {"name": "c", "num_classes": 2,
                                     "options": {"num_layers": 2}}])
    assert "a, b share one; c has its own (its options differ)" in towers_line(mixed)
    assert towers_line(_model("shared", heads={"a": 3})) is None
