"""Tests of `export.quantize`, `export.verify_int8` and `export.bench --int8`.

One tiny run (the three-head run of tests/test_serve.py: a detection, a classification
and a multilabel head on a stand-in backbone) gets small real datasets of each format
(COCO, image folder, table), so calibration reads the run's own training splits. The
fp32 and int8 files and a SavedModel are exported once per module.

The stand-in model is so small (8 to 32 channels) that the int8 file is not smaller than
the fp32 one: the Q/DQ nodes and per-channel scales outweigh the 4x smaller weights.
The tests check what holds at any size: every weight stored as int8, activations
quantised on every convolution, post-processing left in float32. Its detections are not
a meaningful agreement case either (about 1900 anchors per image above the score
threshold, six kept: the cut among near-equal scores is arbitrary), so detection rates
are checked on a constructed case.
"""
import csv
import json
import os
import re
import shutil
import types

import numpy as np
import onnx
import pytest
from PIL import Image

import effdet_tf.backbones.cspdarknet53 as csp
from effdet_tf.cli import run_cli
from effdet_tf.config import dump_config, load_config
from effdet_tf.errors import ConfigError, ExportError
from export import bench as bench_cli
from export import onnx as onnx_export
from export import quantize, verify_int8
from export import saved_model as sm_export
from export import verify as verify_cli
from export.onnx import onnx_session
from tests.backbones import tiny_backbone
from tests.test_serve import make_run, picture

TRAIN_IMAGES = 6


def _save(path: str, image: np.ndarray) -> None:
    """Writes an RGB image (JPEG or PNG by extension), creating its folder."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(image).save(path)


def make_datasets(root: str) -> dict:
    """Small train splits of the run's three datasets; `{dataset: root}`."""
    roots = {name: os.path.join(root, name) for name in ("fruits", "shapes", "tags")}
    images, annotations = [], []
    for k in range(TRAIN_IMAGES):
        name = f"f{k}.jpg"
        _save(os.path.join(roots["fruits"], "images", name), picture(160, 120, seed=k))
        images.append({"id": k + 1, "file_name": name, "width": 160, "height": 120})
        annotations.append({"id": k + 1, "image_id": k + 1, "category_id": 1 + k % 3,
                            "bbox": [16, 24, 56, 60], "iscrowd": 0})
    os.makedirs(os.path.join(roots["fruits"], "annotations"))
    with open(os.path.join(roots["fruits"], "annotations", "instances_train.json"), "w",
              encoding="utf-8") as stream:
        json.dump({"images": images, "annotations": annotations, "categories": [
            {"id": i + 1, "name": n} for i, n in enumerate(["apple", "banana", "orange"])]},
                  stream)
    for k in range(TRAIN_IMAGES):
        shape = ("circle", "square", "triangle")[k % 3]
        _save(os.path.join(roots["shapes"], "train", shape, f"s{k}.png"),
              picture(96, 128, seed=10 + k))
    rows = [["id", "split", "red", "round", "shiny", "striped"]]
    for k in range(TRAIN_IMAGES):
        _save(os.path.join(roots["tags"], "images", f"t{k}.jpg"), picture(128, 128, seed=20 + k))
        rows.append([f"t{k}", "train", k % 2, (k + 1) % 2, 1, 0])
    with open(os.path.join(roots["tags"], "labels.csv"), "w", encoding="utf-8",
              newline="") as stream:
        csv.writer(stream).writerows(rows)
    return roots


def point_datasets(run: str, roots: dict) -> None:
    """Rewrites the run config's dataset roots."""
    path = os.path.join(run, "config.yaml")
    cfg = load_config(path)
    for dataset in cfg.data.datasets:
        dataset.root = roots[dataset.name]
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(dump_config(cfg))


@pytest.fixture(name="q8", scope="module")
def fixture_q8(tmp_path_factory):
    """The run (with real datasets), its fp32 ONNX and its int8 ONNX made by the CLI."""
    root = str(tmp_path_factory.mktemp("quantize"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csp, "build_cspdarknet53", tiny_backbone)
        run = make_run(os.path.join(root, "run"))
        point_datasets(run, make_datasets(os.path.join(root, "data")))
        fp32 = os.path.join(root, "out", "model.onnx")
        int8 = os.path.join(root, "out", "model_int8.onnx")
        assert onnx_export.main(["--run", run, "--weights", "last", "--out", fp32]) == 0
        assert onnx_export.main(["--run", run, "--weights", "last", "--out", int8, "--int8",
                                 "--calibration-images", "8"]) == 0
        saved = os.path.join(root, "out", "saved_model")
        assert sm_export.main(["--run", run, "--weights", "last", "--out", saved]) == 0
        yield types.SimpleNamespace(root=root, run=run, fp32=fp32, int8=int8, saved=saved)


def _nodes(path: str) -> list:
    return list(onnx.load(path).graph.node)


def _descendants(nodes: list, start: list) -> set:
    """Names of the nodes reading, directly or not, the outputs of `start`."""
    readers = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    seen, stack = set(), [out for node in start for out in node.output]
    while stack:
        for node in readers.get(stack.pop(), []):
            if node.name not in seen:
                seen.add(node.name)
                stack.extend(node.output)
    return seen


def quantized_summary(path: str) -> dict:
    """`{"quantize_linear": count, "dequantize_linear": count, "dq_consumers": {op: count}}`."""
    nodes = onnx.load(path).graph.node
    dequantized = {out for n in nodes if n.op_type == "DequantizeLinear" for out in n.output}
    consumers: dict = {}
    for node in nodes:
        if node.op_type != "QuantizeLinear" and any(i in dequantized for i in node.input):
            consumers[node.op_type] = consumers.get(node.op_type, 0) + 1
    return {"quantize_linear": sum(n.op_type == "QuantizeLinear" for n in nodes),
            "dequantize_linear": len(dequantized), "dq_consumers": consumers}


def test_int8_file_quantises_the_network_only(q8):
    """Every Conv reads dequantised int8 weights and activations; NMS and letterbox stay fp32."""
    fp32_nodes, nodes = _nodes(q8.fp32), _nodes(q8.int8)
    model = onnx.load(q8.int8)
    inits = {t.name: t for t in model.graph.initializer}
    producer = {out: node for node in nodes for out in node.output}
    convs = [n for n in nodes if n.op_type == "Conv"]
    assert len(convs) == sum(n.op_type == "Conv" for n in fp32_nodes) > 20
    weight_bytes = {"fp32": 0, "int8": 0}
    fp32_inits = {t.name: t for t in onnx.load(q8.fp32).graph.initializer}
    for conv in convs:
        data, weight = (producer.get(conv.input[0]), producer.get(conv.input[1]))
        assert data is not None and data.op_type == "DequantizeLinear", conv.name
        assert weight is not None and weight.op_type == "DequantizeLinear", conv.name
        stored = inits[weight.input[0]]
        assert stored.data_type == onnx.TensorProto.INT8
        weight_bytes["int8"] += onnx.numpy_helper.to_array(stored).nbytes
    for conv in (n for n in fp32_nodes if n.op_type == "Conv"):
        weight_bytes["fp32"] += onnx.numpy_helper.to_array(fp32_inits[conv.input[1]]).nbytes
    assert weight_bytes["int8"] / weight_bytes["fp32"] == pytest.approx(0.25, abs=0.01)
    summary = quantized_summary(q8.int8)
    assert summary["quantize_linear"] > 0 and summary["dq_consumers"]["Conv"] == len(convs)
    post = [n for n in nodes if n.op_type in ("NonMaxSuppression", "TopK")]
    assert post and not any(n.name in _descendants(nodes, post) for n in nodes
                            if n.op_type in ("QuantizeLinear", "DequantizeLinear"))
    for kind in ("NonMaxSuppression", "TopK", "Resize", "Round", "Pad", "GatherND"):
        assert kind not in summary["dq_consumers"], kind
    network = quantize.network_nodes(onnx.load(q8.fp32))
    assert network and all(name.startswith("multi_head_detector") for name in network)
    for name in ("fruits_classes.txt", "preprocessing.json"):
        assert os.path.isfile(os.path.join(os.path.dirname(q8.int8), name))


def test_int8_runs_with_the_fp32_outputs(q8):
    """A batch of two images of another size: same output names, dtypes and shapes."""
    images = np.stack([picture(200, 90, seed=s) for s in (3, 4)])
    results = []
    for path in (q8.fp32, q8.int8):
        session = onnx_session(path)
        names = [o.name for o in session.get_outputs()]
        results.append(dict(zip(names, session.run(None, {"images": images}))))
    fp32, int8 = results[0], results[1]
    assert list(fp32) == list(int8)
    for name, value in fp32.items():
        assert (int8[name].dtype, int8[name].shape) == (value.dtype, value.shape), name
    logits = [r["fruits_class_logits"].ravel() for r in results]
    assert np.corrcoef(*logits)[0, 1] > 0.99
    assert np.array_equal(fp32["shape_top_classes"][:, 0], int8["shape_top_classes"][:, 0])


def _det(boxes, classes, scores=None):
    """Outputs of one image of a detection head `det` (batch of one, K = 4)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    count = len(boxes)
    scores = np.linspace(0.9, 0.5, count) if scores is None else np.asarray(scores)
    pad = 4 - count
    return {"det_boxes": np.pad(boxes, ((0, pad), (0, 0)))[None],
            "det_classes": np.pad(np.asarray(classes, np.int32), (0, pad))[None],
            "det_scores": np.pad(scores.astype(np.float32), (0, pad))[None],
            "det_num_detections": np.asarray([count], np.int32)}


def test_agreement_rates_on_a_constructed_case():
    """Matched detections (class, IoU >= 0.5, one to one), top-1 and tag agreement."""
    box = [0, 0, 10, 10]
    fp32 = [_det([box, [20, 20, 30, 30], [40, 0, 50, 10], [0, 0, 10, 10.5]], [0, 1, 0, 0]),
            _det([box], [2])]
    int8 = [_det([[0, 0, 10, 12],          # IoU 0.83, class 0: matches the first
                  [26, 26, 36, 36],        # IoU 0.06: no match for the second
                  [40, 0, 50, 10]],        # right box, class 1: no match for the third
                 [0, 1, 1]),               # the fourth (same place) finds its match used
            _det([box], [2])]
    for out, probs, tags in zip((fp32[0], fp32[1], int8[0], int8[1]),
                                ([.7, .2, .1], [.4, .5, .1], [.6, .3, .1], [.5, .4, .1]),
                                ([1, 0, 1, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 1, 1, 1])):
        out["cls_probabilities"] = np.asarray([probs], np.float32)
        out["tag_probabilities"] = np.asarray([tags], np.float32)
        out["tag_tags"] = np.asarray([tags], np.int32)
    heads = {"det": "detection", "cls": "classification", "tag": "multilabel"}
    rows = verify_int8.agreement(heads, fp32, [int8[0], int8[1]])
    by_head = {row.head: row for row in rows}
    assert (by_head["det"].agreed, by_head["det"].total) == (2, 5)
    assert (by_head["cls"].agreed, by_head["cls"].total) == (1, 2)
    assert (by_head["tag"].agreed, by_head["tag"].total) == (7, 8)
    assert [row.ok for row in rows] == [False, False, False]
    assert "max_detections reached on 1 of 2" in by_head["det"].note
    assert "at every score: 0.400 of fp32 5 (int8 4)" in by_head["det"].note
    confident = verify_int8.agreement({"det": "detection"}, fp32, int8, min_score=0.8)[0]
    assert (confident.agreed, confident.total) == (2, 2) and confident.ok  # scores 0.9 only
    same = verify_int8.agreement(heads, fp32, fp32)
    assert all(row.rate == 1.0 and row.ok for row in same)
    empty = verify_int8.agreement({"det": "detection"}, [_det([], [])], [_det([box], [0])])
    assert empty[0].rate is None and empty[0].ok
    table = verify_int8.format_table(rows + empty, 2)
    assert "0.400" in table and "0.500" in table and "0.875" in table and "n/a" in table


def test_agreement_cli_on_the_tiny_model(q8, capsys):
    """`export.verify --int8`: a table of rates in [0, 1]; exit 1 exactly when one fails."""
    code = verify_cli.main(["--run", q8.run, "--onnx", q8.fp32, "--int8", q8.int8,
                            "--split", "train", "--max-images", "9"])
    out = capsys.readouterr().out
    assert "int8 vs fp32 ONNX agreement on 9 image(s)" in out
    rows = {}
    for line in out.splitlines()[2:5]:
        found = re.search(r"\s(\d\.\d{3}|n/a)\s+\d+\s+\d\.\d\d\s+(PASS|FAIL|n/a)", line)
        assert found, line
        rows[line.split()[0]] = (found.group(1), found.group(2))
    assert set(rows) == {"fruits", "shape", "tags"}
    for rate, _ in rows.values():
        assert rate == "n/a" or 0.0 <= float(rate) <= 1.0
    assert rows["shape"][1] == rows["tags"][1] == "PASS"
    assert code == (1 if any(status == "FAIL" for _, status in rows.values()) else 0)
    images = [picture(128, 128, seed=s) for s in range(3)]
    for row in verify_int8.compare_files(q8.fp32, q8.int8, images):
        assert row.rate is None or 0.0 <= row.rate <= 1.0


def _copy_run(q8, folder: str) -> str:
    """A copy of the run's config, classes and checkpoint."""
    run = os.path.join(folder, "run")
    shutil.copytree(q8.run, run)
    return run


def test_missing_calibration_images_fail_in_one_line(q8, tmp_path, capsys):
    """No dataset folder, or a listed image missing: one-line ExportError, nothing written."""
    run = _copy_run(q8, str(tmp_path))
    out_dir = tmp_path / "out"
    out = str(out_dir / "model_int8.onnx")
    point_datasets(run, {"fruits": str(tmp_path / "gone"), "shapes": str(tmp_path / "gone"),
                         "tags": str(tmp_path / "gone")})
    with pytest.raises(SystemExit) as stop:
        run_cli(onnx_export.main, ["--run", run, "--out", out, "--int8"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: calibration needs the run's train images: dataset 'fruits'")
    assert "\n" not in err and not out_dir.exists()
    data = tmp_path / "data"
    point_datasets(run, make_datasets(str(data)))
    os.remove(data / "shapes" / "train" / "square" / "s1.png")
    os.remove(data / "fruits" / "images" / "f2.jpg")
    out_dir.mkdir()
    with pytest.raises(ExportError, match=r"calibration image .*f2.jpg not found"):
        quantize.export_int8(run, out, calibration_images=100)
    assert os.listdir(out_dir) == []


def test_bench_adds_int8(q8, tmp_path):
    """`export.bench --int8 FILE`: int8 latency at every batch size, its size, the ratios."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csp, "build_cspdarknet53", tiny_backbone)
        report = bench_cli.bench(q8.run, weights="last", repeats=2, warmup=1, batches=(1, 8),
                                 single_heads=False, int8=q8.int8,
                                 exports={"saved_model": q8.saved, "onnx": q8.fp32})
    assert set(report["latency"]["onnxruntime_int8"]) == {"1", "8"}
    assert report["sizes_bytes"]["onnx_int8"] == os.path.getsize(q8.int8)
    text = bench_cli.format_report(report)
    assert "onnxruntime_int8     8" in text and "vs fp32 ONNX: size" in text
    with pytest.raises(ConfigError, match="does not exist"):
        bench_cli.int8_file(None, q8.run, str(tmp_path / "missing.onnx"), str(tmp_path))


def test_calibration_reads_every_image(q8, tmp_path):
    """16 images, one full slice (onnxruntime 1.32's CalibMaxIntermediateOutputs dropped
    it and failed with "No data is collected"): all 16 are read and the file is written."""
    paths = quantize.draw_images(quantize.split_images(quantize.run_config(q8.run)), 16, 0)
    reader = quantize.calibration_reader(paths)
    read = []
    next_batch = reader.get_next

    def counting():
        batch = next_batch()
        read.extend([batch] if batch else [])
        return batch

    reader.get_next = counting
    out = str(tmp_path / "model_int8.onnx")
    assert quantize.quantize_file(q8.fp32, out, reader, str(tmp_path)) > 20
    assert len(read) == 16 and onnx_session(out) is not None
    assert [quantize.calibration_stride(n) for n in (64, 70, 61, 8)] == [16, 14, 1, 8]


def _scores(run: str, folder: str) -> dict:
    with open(os.path.join(run, folder, "metrics_train.json"), encoding="utf-8") as stream:
        return json.load(stream)


def test_evaluate_scores_exports_like_the_keras_model(q8, tmp_path, capsys):
    """`train.evaluate --model`: fp32 ONNX and SavedModel score what the Keras model scores
    on the same split; int8 gets its own figures; a foreign export fails in one line."""
    # pylint: disable-next=import-outside-toplevel  # heavy
    from train import evaluate
    from train.export_runner import ExportRunner  # pylint: disable=import-outside-toplevel
    from train.label_eval import predict_labels  # pylint: disable=import-outside-toplevel
    from train.run_dir import load_run  # pylint: disable=import-outside-toplevel

    run = _copy_run(q8, str(tmp_path))
    with open(os.path.join(run, "classes.json"), encoding="utf-8") as stream:
        classes = json.load(stream)
    classes["shape"].update(train_counts=[2, 2, 2], train_known=[6, 6, 6])
    classes["tags"].update(train_counts=[3, 3, 6, 0], train_known=[6, 6, 6, 6])
    with open(os.path.join(run, "classes.json"), "w", encoding="utf-8") as stream:
        json.dump(classes, stream)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csp, "build_cspdarknet53", tiny_backbone)
        assert evaluate.main(["--run", run, "--split", "train", "--weights", "last"]) == 0
    assert evaluate.main(["--run", run, "--split", "train", "--model", q8.fp32]) == 0
    assert evaluate.main(["--run", run, "--split", "train", "--model", q8.saved]) == 0
    assert evaluate.main(["--run", run, "--split", "train", "--model", q8.int8]) == 0
    assert "scoring the export" in capsys.readouterr().out
    keras_scores = _scores(run, "eval_train")
    for folder in ("eval_train_onnx_out_model.onnx", "eval_train_saved_model_out_saved_model"):
        exported = _scores(run, folder)
        assert set(exported) == set(keras_scores) == {"fruits", "shape", "tags"}
        # Not mAP: the stand-in model's scores are nearly equal across images, so rounding
        # reorders ties (the probabilities themselves are compared below).
        for key in ("accuracy", "top2_accuracy", "macro_f1"):
            assert exported["shape"][key] == pytest.approx(keras_scores["shape"][key], abs=1e-6)
        for key in ("micro_f1", "macro_f1"):
            assert exported["tags"][key] == pytest.approx(keras_scores["tags"][key], abs=1e-6)
        assert exported["fruits"]["num_images"] == keras_scores["fruits"]["num_images"]
        assert exported["fruits"]["AP50"] == pytest.approx(keras_scores["fruits"]["AP50"],
                                                           abs=0.05)
    int8_scores = _scores(run, "eval_train_onnx_out_model_int8.onnx")
    assert int8_scores["shape"]["num_images"] == TRAIN_IMAGES
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csp, "build_cspdarknet53", tiny_backbone)
        cfg, model, _ = load_run(run, weights="last")
    for head, index in (("shape", 1), ("tags", 2)):
        want = predict_labels(model, cfg, index, "train", head)["probs"]
        got = predict_labels(ExportRunner(q8.fp32), cfg, index, "train", head)["probs"]
        np.testing.assert_allclose(got, want, atol=1e-5)
    with open(os.path.join(run, "classes.json"), "w", encoding="utf-8") as stream:
        json.dump({**classes, "shape": {**classes["shape"], "names": ["a", "b", "c"]}}, stream)
    with pytest.raises(SystemExit) as stop:
        run_cli(evaluate.main, ["--run", run, "--split", "train", "--model", q8.fp32])
    assert stop.value.code == 2
    assert "has classes ['circle', 'square', 'triangle']" in capsys.readouterr().err
