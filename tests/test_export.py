"""Tests of export/: SavedModel, ONNX, verification and failure handling.

A tiny run folder is built once per module (`exports` fixture): two heads at image size
128 on a small stand-in backbone (CSPDarknet53 makes tf2onnx take minutes on two cores;
the export code does not depend on the backbone), with the prediction layers scaled so
that detections pass the score threshold.
"""
import json
import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from effdet_tf.config import config_from_dict, dump_config
from effdet_tf.errors import ConfigError, ExportError
from export import bench as bench_cli
from export import onnx as onnx_export
from export import saved_model as sm_export
from export import verify as verify_cli
from export.graph import graph_from_run, letterbox_batch, load_graph
from export.io import atomic_output
from export.onnx_profile import write_relu_floor
from tests.backbones import tiny_backbone

IMAGE_SIZE = 128
MAX_DETECTIONS = 6
CLASSES = {"fruits": {"names": ["apple", "banana", "orange"], "category_ids": [1, 2, 3]},
           "household": {"names": ["curtain", "pot"], "category_ids": [5, 7]}}


def make_config(overrides=()):
    """Config of the test runs: two datasets, image size 128, a small BiFPN; `overrides`
    as `--set` takes them."""
    return config_from_dict({
        "name": "export_test",
        "data": {"image_size": IMAGE_SIZE,
                 "datasets": [{"name": "fruits", "root": "unused/fruits"},
                              {"name": "household", "root": "unused/household"}]},
        "model": {"fpn_channels": 16, "fpn_cells": 1, "head_layers": 1},
        "eval": {"max_detections": MAX_DETECTIONS, "score_threshold": 0.3,
                 "iou_threshold": 0.5}}, list(overrides))


def spread_outputs(model, seed: int) -> None:
    """Scales the prediction layers so logits and deltas vary across anchors and images.

    Freshly built, the heads' outputs vary by less than float32 resolves next to the
    class bias; the biases are zeroed first so the spread is measured, then the
    pointwise kernels are scaled to a set spread and the biases set.
    """
    layers = {"class_logits": ("class_predict", 1.5, -1.0), "box_deltas": ("box_predict", 0.3, 0.0)}
    for var in model.weights:
        if any(f"_{layer}/bias" in var.path for layer, _, _ in layers.values()):
            var.assign(np.zeros(var.shape, np.float32))
    size = model.image_size
    images = np.random.default_rng(seed).integers(0, 256, (2, size, size, 3)).astype(np.float32)
    outputs = model(images, training=False)
    for head in model.head_names:
        for key, (layer, target, bias) in layers.items():
            spread = float(np.std(outputs[head][key]))
            for var in model.weights:
                if f"{head}_{layer}/pointwise_kernel" in var.path:
                    var.assign(var.numpy() * target / max(spread, 1e-30))
                elif f"{head}_{layer}/bias" in var.path:
                    var.assign(np.full(var.shape, bias, np.float32))


def make_run(folder, seed: int, weights: bool = True, overrides=()) -> str:
    """Writes a run folder (config, classes, `checkpoints/last.weights.h5`)."""
    from train.run_dir import build_model  # pylint: disable=import-outside-toplevel  # after the backbone patch

    cfg = make_config(overrides)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.yaml"), "w", encoding="utf-8") as stream:
        stream.write(dump_config(cfg))
    with open(os.path.join(folder, "classes.json"), "w", encoding="utf-8") as stream:
        json.dump(CLASSES, stream)
    if weights:
        keras.utils.set_random_seed(seed)
        model = build_model(cfg, CLASSES)
        spread_outputs(model, seed)
        os.makedirs(os.path.join(folder, "checkpoints"))
        model.save_weights(os.path.join(folder, "checkpoints", "last.weights.h5"))
    return str(folder)


@pytest.fixture(name="exports", scope="module")
def fixture_exports(tmp_path_factory):
    """Two runs (different weights) and the SavedModel and ONNX of the first."""
    import effdet_tf.backbones.cspdarknet53 as csp  # pylint: disable=import-outside-toplevel  # patched below

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csp, "build_cspdarknet53", tiny_backbone)
        root = tmp_path_factory.mktemp("export")
        run = make_run(root / "run", seed=1)
        other = make_run(root / "other_run", seed=2)
        saved_model = str(root / "out" / "model_savedmodel")
        onnx_file = str(root / "out" / "model.onnx")
        os.makedirs(root / "out")
        assert sm_export.main(["--run", run, "--out", saved_model]) == 0
        assert onnx_export.main(["--run", run, "--out", onnx_file]) == 0
        yield types.SimpleNamespace(root=root, run=run, other=other, saved_model=saved_model,
                                    onnx=onnx_file)


def _numpy(outputs) -> dict:
    return {k: v.numpy() for k, v in outputs.items()}


def test_saved_model_signatures_any_size(exports):
    """serving_default takes any size; boxes are in input pixels (2x image -> 2x boxes)."""
    loaded = tf.saved_model.load(exports.saved_model)
    serve = loaded.signatures["serving_default"]
    small = verify_cli.generated_images(IMAGE_SIZE)[0]            # 96 x 128
    small = np.stack([small, small[:, ::-1]])
    large = small.repeat(2, axis=1).repeat(2, axis=2)             # 192 x 256, same frame
    out_small = _numpy(serve(images=tf.constant(small)))
    out_large = _numpy(serve(images=tf.constant(large)))
    for head, table in CLASSES.items():
        count = out_small[f"{head}_num_detections"]
        assert out_small[f"{head}_boxes"].shape == (2, MAX_DETECTIONS, 4)
        assert out_small[f"{head}_scores"].shape == (2, MAX_DETECTIONS)
        assert out_small[f"{head}_classes"].dtype == np.int32
        assert count.shape == (2,) and count.min() > 0, "no detections: the test is vacuous"
        np.testing.assert_array_equal(count, out_large[f"{head}_num_detections"])
        for i in range(2):
            n = count[i]
            boxes = out_small[f"{head}_boxes"][i]
            assert boxes[:n].min() >= 0 and boxes[:n, 0::2].max() <= 128
            assert boxes[:n, 1::2].max() <= 96
            np.testing.assert_array_equal(boxes[n:], -1)
            np.testing.assert_allclose(out_large[f"{head}_boxes"][i, :n], 2 * boxes[:n],
                                       atol=1e-3)
            classes = out_small[f"{head}_classes"][i]
            names = [s.decode() for s in out_small[f"{head}_class_names"][i]]
            assert names[:n] == [table["names"][c] for c in classes[:n]]
            assert names[n:] == [""] * (MAX_DETECTIONS - n) and (classes[n:] == -1).all()
    raw = _numpy(loaded.signatures["raw"](images=tf.zeros([1, 128, 128, 3])))
    assert raw["fruits_class_logits"].shape[2] == 3 and raw["household_box_deltas"].shape[2] == 4
    with open(os.path.join(exports.saved_model, "household_classes.txt"), encoding="utf-8") as f:
        assert f.read().split() == CLASSES["household"]["names"]


def test_onnx_dynamic_batch_and_size(exports):
    """ONNX Runtime runs batch 1 and 3, at two image sizes, like the SavedModel."""
    session = onnx_export.onnx_session(exports.onnx)
    names = [o.name for o in session.get_outputs()]
    serve = tf.saved_model.load(exports.saved_model).signatures["serving_default"]
    rng = np.random.default_rng(3)
    for batch, height, width in ((1, 128, 128), (3, 80, 160)):
        images = rng.integers(0, 256, (batch, height, width, 3), np.uint8)
        got = dict(zip(names, session.run(None, {"images": images})))
        ref = _numpy(serve(images=tf.constant(images)))
        for head in CLASSES:
            assert got[f"{head}_boxes"].shape == (batch, MAX_DETECTIONS, 4)
            np.testing.assert_array_equal(got[f"{head}_num_detections"],
                                          ref[f"{head}_num_detections"])
            np.testing.assert_allclose(got[f"{head}_boxes"], ref[f"{head}_boxes"], atol=1e-2)
    assert os.path.isfile(os.path.join(os.path.dirname(exports.onnx), "fruits_classes.txt"))


def test_verify_passes_on_good_export(exports, capsys):
    """Keras, SavedModel and ONNX Runtime agree on the run they come from."""
    args = ["--run", exports.run, "--onnx", exports.onnx, "--saved-model", exports.saved_model]
    assert verify_cli.main(args) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "FAIL" not in out


def test_verify_fails_on_other_weights(exports, capsys):
    """Exports compared with a run of other weights fail with exit 1 and the numbers."""
    args = ["--run", exports.other, "--onnx", exports.onnx, "--saved-model",
            exports.saved_model]
    assert verify_cli.main(args) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and "max |diff|" in captured.out
    assert "FAIL" in captured.err


def test_existing_output_refused(exports):
    """An existing output is refused without --overwrite (clear message, exit code 2)."""
    for module, out in ((sm_export, exports.saved_model), (onnx_export, exports.onnx)):
        with pytest.raises(ExportError, match="already exists.*--overwrite"):
            module.main(["--run", exports.run, "--out", out])
        with pytest.raises(SystemExit) as stopped:
            from effdet_tf.cli import run_cli  # pylint: disable=import-outside-toplevel  # local use
            run_cli(module.main, ["--run", exports.run, "--out", out])
        assert stopped.value.code == 2
    assert os.path.isfile(os.path.join(exports.saved_model, "saved_model.pb"))


def test_bad_opset_and_broken_conversion_leave_nothing(exports, monkeypatch):
    """Opset 3 is refused; a file ONNX Runtime cannot run is deleted and reported."""
    out = exports.root / "bad" / "model.onnx"
    os.makedirs(out.parent)
    with pytest.raises(ConfigError, match="opset 3 is not supported"):
        onnx_export.main(["--run", exports.run, "--out", str(out), "--opset", "3"])

    def broken(_graph, path, _opset):
        with open(path, "wb") as stream:
            stream.write(b"not an onnx model")

    monkeypatch.setattr(onnx_export, "convert", broken)
    with monkeypatch.context() as patch:
        import effdet_tf.backbones.cspdarknet53 as csp  # pylint: disable=import-outside-toplevel  # patched
        patch.setattr(csp, "build_cspdarknet53", tiny_backbone)
        with pytest.raises(ExportError, match="does not run in ONNX Runtime"):
            onnx_export.main(["--run", exports.run, "--out", str(out)])
    assert not os.listdir(out.parent)


def test_run_without_weights(tmp_path):
    """A run folder without weights, or no run folder at all, is a clear error."""
    run = make_run(tmp_path / "empty_run", seed=0, weights=False)
    with pytest.raises(ConfigError, match="no model weights"):
        sm_export.main(["--run", run, "--out", str(tmp_path / "sm")])
    with pytest.raises(ConfigError, match="does not exist"):
        onnx_export.main(["--run", str(tmp_path / "nope"), "--out", str(tmp_path / "m.onnx")])
    assert sorted(os.listdir(tmp_path)) == ["empty_run"]


def test_letterbox_batch_matches_pipeline():
    """The in-graph batch letterbox equals `data_pipelines.decode.letterbox` per image."""
    from data_pipelines.decode import letterbox  # pylint: disable=import-outside-toplevel  # TF heavy

    rng = np.random.default_rng(0)
    for height, width in ((96, 128), (200, 70), (33, 257), (128, 128), (300, 400)):
        images = rng.integers(0, 256, (2, height, width, 3), np.uint8)
        frames, scale, pad = letterbox_batch(tf.constant(images), IMAGE_SIZE)
        for image, frame in zip(images, frames.numpy()):
            ref, ref_scale, ref_pad = letterbox(tf.constant(image), tf.constant([height, width]),
                                                IMAGE_SIZE)
            np.testing.assert_array_equal(frame, ref.numpy().astype(np.float32))
            assert float(scale) == pytest.approx(float(ref_scale[0]))
            np.testing.assert_array_equal(pad.numpy(), ref_pad.numpy())


def test_bench_and_single_head_weights(exports, tmp_path):
    """The bench reports every runtime; a single-head model reproduces its head."""
    from effdet_tf.cli import run_cli  # pylint: disable=import-outside-toplevel  # local use
    from train.run_dir import load_run  # pylint: disable=import-outside-toplevel  # heavy

    out = tmp_path / "bench.json"
    with pytest.raises(SystemExit) as stopped:
        run_cli(bench_cli.main, ["--run", exports.run, "--repeats", "2", "--warmup", "1",
                                 "--batches", "1", "--no-single-heads", "--saved-model",
                                 exports.saved_model, "--onnx", exports.onnx, "--out", str(out),
                                 "--profile"])
    assert stopped.value.code == 0
    with open(out, encoding="utf-8") as stream:
        report = json.load(stream)
    assert set(report["latency"]) == {"keras", "saved_model", "onnxruntime", "onnx_relu_floor"}
    assert report["sizes_bytes"]["onnx"] > 0
    assert report["floor_replaced"] == 5, "one Mish per tiny backbone convolution"
    groups = report["profile"]["1"]["groups"]
    assert groups["conv"] > 0 and groups["mish"] > 0 and groups["nms"] > 0
    assert report["profile"]["1"]["kernel_ms"] == pytest.approx(sum(groups.values()))
    assert not [name for name in os.listdir(os.path.dirname(exports.onnx))
                if "profile" in name], "the ONNX Runtime trace is left behind"
    with pytest.MonkeyPatch.context() as patch:
        import effdet_tf.backbones.cspdarknet53 as csp  # pylint: disable=import-outside-toplevel  # patched
        patch.setattr(csp, "build_cspdarknet53", tiny_backbone)
        config, model, classes = load_run(exports.run, weights="last")
        graph = graph_from_run(config, model, classes)
        single = bench_cli.single_head_graph(graph, config, classes, "household")
    images = tf.constant(verify_cli.generated_images(IMAGE_SIZE)[1][None])
    np.testing.assert_allclose(single.detect(images)["household_boxes"],
                               graph.detect(images)["household_boxes"], atol=1e-4)


def test_atomic_output_keeps_old_and_leaves_no_temp(tmp_path):
    """A failing write leaves neither a temporary file nor a changed output."""
    target = tmp_path / "model.onnx"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(str(target), overwrite=True) as tmp:
            with open(tmp, "w", encoding="utf-8") as stream:
                stream.write("partial")
            raise RuntimeError("conversion failed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["model.onnx"]
    with atomic_output(str(tmp_path / "saved"), overwrite=False, is_dir=True) as tmp:
        (tmp_path / tmp / "saved_model.pb").write_text("x")
    assert sorted(os.listdir(tmp_path)) == ["model.onnx", "saved"]
    with pytest.raises(ExportError, match="is not a folder"):
        sm_export.main(["--run", "unused", "--out", str(tmp_path / "model.onnx" / "dir")])
    # Missing parent folders are made, and removed again when the export fails.
    with pytest.raises(RuntimeError):
        with atomic_output(str(tmp_path / "no" / "such" / "m.onnx"), overwrite=False) as tmp:
            assert os.path.isdir(tmp_path / "no" / "such")
            raise RuntimeError("conversion failed")
    assert not (tmp_path / "no").exists()
    with atomic_output(str(tmp_path / "new" / "m.onnx"), overwrite=False) as tmp:
        with open(tmp, "w", encoding="utf-8") as stream:
            stream.write("x")
    assert (tmp_path / "new" / "m.onnx").read_text(encoding="utf-8") == "x"


def test_mish_rewrite_matches_softplus_tanh(tmp_path):
    """The Mish rewrite removes Softplus/Tanh and keeps the values (float32 tolerance)."""
    from onnx import TensorProto, helper  # pylint: disable=import-outside-toplevel  # local use

    from export.onnx_rewrite import rewrite_mish  # pylint: disable=import-outside-toplevel

    nodes = [helper.make_node("Softplus", ["x"], ["sp"]), helper.make_node("Tanh", ["sp"], ["t"]),
             helper.make_node("Mul", ["x", "t"], ["y"])]
    graph = helper.make_graph(nodes, "mish", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [None])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert rewrite_mish(model) == 1
    assert {n.op_type for n in model.graph.node}.isdisjoint({"Softplus", "Tanh", "Min"})
    assert [n.name for n in model.graph.node if n.op_type == "Mul"][-1] == "effdet_mish_0_mul"
    path = tmp_path / "mish.onnx"
    path.write_bytes(model.SerializeToString())
    x = np.linspace(-40, 100, 2001).astype(np.float32)
    (got,) = onnx_export.onnx_session(str(path)).run(None, {"x": x})
    expected = x.astype(np.float64) * np.tanh(np.logaddexp(0.0, x.astype(np.float64)))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    floor = tmp_path / "floor.onnx"
    assert write_relu_floor(str(path), str(floor)) == 1
    (got,) = onnx_export.onnx_session(str(floor)).run(None, {"x": x})
    np.testing.assert_array_equal(got, np.maximum(x, 0))
    assert write_relu_floor(str(floor), str(tmp_path / "none.onnx")) == 0
    assert not (tmp_path / "none.onnx").exists()


def test_export_at_another_image_size(exports):
    """A run exports at another multiple of 128 with the same weights; others are refused."""
    import effdet_tf.backbones.cspdarknet53 as csp  # pylint: disable=import-outside-toplevel  # patched

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csp, "build_cspdarknet53", tiny_backbone)
        small, _ = load_graph(exports.run, weights="last")
        large, _ = load_graph(exports.run, weights="last", image_size=256)
        with pytest.raises(ConfigError, match="multiple of 128"):
            load_graph(exports.run, weights="last", image_size=200)
    assert (small.image_size, large.image_size) == (128, 256)
    assert all(len(large.model.task_heads[h].anchors) == 4 * len(small.model.task_heads[h].anchors)
               for h in small.head_names)
    small_weights = {v.path: v.numpy() for v in small.model.weights}
    for var in large.model.weights:
        np.testing.assert_array_equal(var.numpy(), small_weights[var.path])
    image = verify_cli.generated_images(IMAGE_SIZE)[1][None]
    big = np.repeat(np.repeat(image, 2, axis=1), 2, axis=2)
    out = large.detect(tf.constant(big))
    assert out["fruits_boxes"].shape == (1, MAX_DETECTIONS, 4)
    assert int(out["fruits_num_detections"][0]) > 0


def test_saturation_note_is_information_only():
    """Ambiguous saturated scores add an 'info' row; one confident class per box does not."""
    raw = {"a_class_logits": np.array([[[30.0, 40.5], [1.0, 2.0]]]),   # two classes at 1.0
           "b_class_logits": np.array([[[20.0, 2.0], [1.0, 2.0]]]),    # one class: fine
           "c_class_logits": np.array([[[20.0], [25.0], [30.0]]])}     # 3 boxes, keep 2
    rows = verify_cli.saturation_notes(raw, ["a", "b", "c"], max_detections=2)
    assert [row.check for row in rows] == ["note a", "note c"] and all(r.ok for r in rows)
    assert "40.5" in rows[0].value and "1 box(es)" in rows[0].value
    assert "up to 3 boxes" in rows[1].value
    table = verify_cli.format_rows(rows).splitlines()
    assert table[1].rstrip().endswith("info")
