"""Classification and multilabel heads next to a detection head, end to end, in process.

One shared tiny run (a stand-in backbone, 2 x 2 steps) on the embedded samples: a COCO
detection set, an image folder (the class of the largest shape) and a CSV table of tags
with missing values. Checks what a user gets: the run folder, per-head metrics with
baselines and plots, thresholds chosen on val and saved, `train.evaluate`,
`train.predict` (predictions.parquet from a folder, a table and an image),
SavedModel / ONNX exports with `preprocessing.json`, and `export.verify`.
"""
import json
import os

import numpy as np
import pytest

from data_pipelines.sample_data import ensure_sample_data
from data_pipelines.sample_labels import TAGS, make_label_samples
from effdet_tf.config import config_from_dict
from effdet_tf.errors import ConfigError, DataError
from tests.backbones import tiny_backbone

SETTINGS = ["data.image_size=128", "train.batch_size=4", "train.steps_per_epoch=2",
            "train.epochs=2", "eval.batch_size=8", "train.precise_bn_steps=1",
            "train.refresh_bn_steps=1", "model.fpn_channels=16", "model.fpn_cells=1",
            "model.head_layers=1", "data.max_boxes=16"]


def _config(sample_root, label_roots, run_dir, overrides=()):
    return config_from_dict({
        "name": "tasks",
        "heads": [{"name": "shapes"},
                  {"name": "shape", "kind": "classification",
                   "options": {"class_weights": "balanced", "label_smoothing": 0.1}},
                  {"name": "tags", "kind": "multilabel"}],
        "data": {"datasets": [
            {"name": "shapes", "root": os.path.join(sample_root, "shapes"),
             "heads": ["shapes"]},
            {"name": "shape_folder", "format": "image_folder",
             "root": label_roots["shape_folder"], "heads": ["shape"]},
            {"name": "sign_tags", "format": "table", "root": label_roots["sign_tags"],
             "table": "labels.csv", "heads": ["tags"]}]},
        "train": {"run_dir": str(run_dir)}}, SETTINGS + list(overrides))


@pytest.fixture(name="data", scope="module")
def fixture_data(tmp_path_factory):
    """(sample root, label dataset roots)."""
    sample = ensure_sample_data(str(tmp_path_factory.mktemp("sample")), seed=0,
                                num_train=12, num_val=6, num_test=6)
    roots = make_label_samples(sample["root"], str(tmp_path_factory.mktemp("labels")))
    return sample["root"], roots


def _patched(function, *args, **kwargs):
    import effdet_tf.backbones.cspdarknet53 as csp  # pylint: disable=import-outside-toplevel  # patched

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csp, "build_cspdarknet53", tiny_backbone)
        return function(*args, **kwargs)


@pytest.fixture(name="run", scope="module")
def fixture_run(data, tmp_path_factory):
    """Trains the three-head config; returns (config, summary)."""
    from train.fit import run_training  # pylint: disable=import-outside-toplevel  # heavy

    cfg = _config(*data, tmp_path_factory.mktemp("runs") / "run")
    return cfg, _patched(run_training, cfg, verbose=0)


def test_run_folder_metrics_and_plots(run):
    """Every head scored on its test split, baselines beside, plots and class files."""
    _, summary = run
    folder = summary["run"]
    metrics = summary["metrics"]
    assert set(metrics) == {"shapes", "shape", "tags"}
    shape, tags = metrics["shape"], metrics["tags"]
    assert shape["kind"] == "classification" and tags["kind"] == "multilabel"
    for key in ("accuracy", "top2_accuracy", "balanced_accuracy", "macro_f1", "mAP"):
        assert 0.0 <= shape[key] <= 1.0 and key in shape["baseline"]
    assert np.asarray(shape["confusion"]).sum() == shape["num_images"] > 0
    assert shape["top2_accuracy"] >= shape["accuracy"]
    for key in ("micro_f1", "macro_f1", "mAP"):
        assert 0.0 <= tags[key] <= 1.0 and key in tags["baseline"]
    assert set(tags["per_tag"]) == set(TAGS)
    for name in ("shape_test_confusion.png", "shape_test_pr_curves.png",
                 "tags_test_pr_curves.png", "metrics_test.json"):
        assert os.path.getsize(os.path.join(folder, "eval_test", name)) > 1000, name
    with open(os.path.join(folder, "tags_classes.txt"), encoding="utf-8") as stream:
        assert stream.read().split() == list(TAGS)
    with open(os.path.join(folder, "classes.json"), encoding="utf-8") as stream:
        classes = json.load(stream)
    assert classes["shape"]["names"] == ["circle", "square", "triangle"]
    assert sum(classes["shape"]["train_counts"]) == 12


def test_thresholds_are_chosen_on_val_and_saved(run):
    """The multilabel head's saved thresholds are the val split's best-F1 ones."""
    from train.label_eval import predict_labels  # pylint: disable=import-outside-toplevel
    from train.label_metrics import best_f1_thresholds  # pylint: disable=import-outside-toplevel
    from train.run_dir import load_run  # pylint: disable=import-outside-toplevel

    cfg, summary = run
    _, model, _ = _patched(load_run, summary["run"])
    saved = model.task_heads["tags"].thresholds.numpy()
    val = predict_labels(model, cfg, 2, "val", "tags")
    np.testing.assert_allclose(saved, best_f1_thresholds(val["probs"], val["labels"],
                                                         val["mask"]), atol=1e-6)
    assert np.any(np.abs(saved - 0.5) > 1e-3)
    assert val["mask"].min() == 0.0  # the CSV's empty cells are unknown, not negative


def test_balanced_class_weights_reach_the_head(run):
    """`class_weights: balanced` becomes total / (C * count) of the training labels."""
    from train.run_dir import load_run  # pylint: disable=import-outside-toplevel

    _, summary = run
    _, model, classes = _patched(load_run, summary["run"], weights="last")
    counts = np.asarray(classes["shape"]["train_counts"])
    expected = counts.sum() / (len(counts) * counts)
    np.testing.assert_allclose(model.task_heads["shape"].class_weights, expected, rtol=1e-5)


def test_predict_writes_the_parquet_table(run, data, tmp_path):
    """A folder, a table of ids and an image: one row each, the columns users expect."""
    import pandas as pd  # pylint: disable=import-outside-toplevel
    from train.predict import main as predict  # pylint: disable=import-outside-toplevel

    _, summary = run
    _, roots = data
    folder = os.path.join(roots["shape_folder"], "test")
    assert _patched(predict, ["--run", summary["run"], folder, "--out", str(tmp_path / "a")]) == 0
    table = pd.read_parquet(tmp_path / "a" / "predictions.parquet")
    assert len(table) == 6 and table["uuid"].is_unique
    for column in ("shape_1", "shape_1_prob", "shape_2", "shape_2_prob", "shapes_detections",
                   *(f"tags_{t}" for t in TAGS), *(f"tags_{t}_prob" for t in TAGS)):
        assert column in table.columns, column
    assert set(table["shape_1"]) <= {"circle", "square", "triangle"}
    assert (table["shape_1_prob"] >= table["shape_2_prob"]).all()
    csv = os.path.join(roots["sign_tags"], "labels.csv")
    assert _patched(predict, ["--run", summary["run"], "--table", csv, "--split", "test",
                              "--out", str(tmp_path / "b")]) == 0
    rows = pd.read_parquet(tmp_path / "b" / "predictions.parquet")
    assert len(rows) == 6 and set(rows[[f"tags_{t}" for t in TAGS]].stack()) <= {0, 1}
    image = os.path.join(roots["sign_tags"], "images", f"{rows['uuid'][0]}.jpg")
    assert _patched(predict, ["--run", summary["run"], image, "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / f"{rows['uuid'][0]}_pred.jpg").is_file()


def test_export_carries_every_head_and_verifies(run, tmp_path):
    """SavedModel and ONNX give the classification and tag outputs; verify compares them;
    the bench times the three-head model and one model per head."""
    from export.bench import bench  # pylint: disable=import-outside-toplevel
    from export.onnx import export_onnx  # pylint: disable=import-outside-toplevel
    from export.saved_model import export_saved_model  # pylint: disable=import-outside-toplevel
    from export.verify import verify  # pylint: disable=import-outside-toplevel

    _, summary = run
    saved, onnx = str(tmp_path / "sm"), str(tmp_path / "model.onnx")
    _patched(export_saved_model, summary["run"], saved)
    _patched(export_onnx, summary["run"], onnx)
    with open(tmp_path / "preprocessing.json", encoding="utf-8") as stream:
        spec = json.load(stream)
    assert spec["letterbox"]["image_size"] == 128 and spec["input"]["dtype"] == "uint8"
    assert spec["heads"]["shape"]["outputs"][:3] == ["shape_probabilities", "shape_top_classes",
                                                     "shape_top_scores"]
    assert len(spec["heads"]["tags"]["thresholds"]) == len(TAGS)
    passed, rows = _patched(verify, summary["run"], onnx, saved)
    checks = [row.check for row in rows]
    assert passed, [row for row in rows if not row.ok]
    assert any(c.startswith("classification shape") for c in checks)
    assert any(c.startswith("multilabel tags") for c in checks)
    report = _patched(bench, summary["run"], repeats=1, warmup=0, batches=(1,),
                      exports={"saved_model": saved, "onnx": onnx})
    assert set(report["latency"]) == {"keras", "saved_model", "onnxruntime"}
    assert report["heads"] == ["shapes", "shape", "tags"]
    assert set(report["single_heads"]["heads"]) == {"shapes", "shape", "tags"}


def test_head_without_training_labels_fails_before_the_run(data, tmp_path):
    """A table whose training rows all lack tags is an error naming the head, early."""
    import pandas as pd  # pylint: disable=import-outside-toplevel
    from train.fit import run_training  # pylint: disable=import-outside-toplevel

    sample_root, roots = data
    blank = tmp_path / "blank"
    blank.mkdir()
    table = pd.read_csv(os.path.join(roots["sign_tags"], "labels.csv"), dtype={"id": str})
    table.loc[table["split"] == "train", list(TAGS)] = np.nan
    table.to_csv(blank / "labels.csv", index=False)
    os.symlink(os.path.join(roots["sign_tags"], "images"), blank / "images")
    run_dir = tmp_path / "run"
    cfg = _config(sample_root, {**roots, "sign_tags": str(blank)}, run_dir)
    with pytest.raises(DataError, match="head 'tags': no training image of sign_tags"):
        run_training(cfg, verbose=0)
    assert not run_dir.exists()


def test_config_routes_formats_to_their_kind(data, tmp_path):
    """An image folder cannot train a detection head; a table needs its file."""
    sample_root, roots = data
    cfg = _config(sample_root, roots, tmp_path)
    values = json.loads(json.dumps(cfg.__dict__, default=lambda o: o.__dict__))
    values["data"]["datasets"][1]["heads"] = ["shapes"]
    values["data"]["datasets"][0]["heads"] = ["shapes"]
    with pytest.raises(ConfigError, match=r"dataset 'shape_folder' \(image_folder\) trains "
                                          r"exactly one classification head, got shapes"):
        config_from_dict(values)
    values = json.loads(json.dumps(cfg.__dict__, default=lambda o: o.__dict__))
    values["data"]["datasets"][2]["table"] = ""
    with pytest.raises(ConfigError, match=r"datasets\[2\].table"):
        config_from_dict(values)
    no_heads = config_from_dict({"data": {"datasets": [
        {"name": "clothes", "format": "image_folder", "root": roots["shape_folder"]}]}})
    assert [(h.name, h.kind) for h in no_heads.head_configs] == [("clothes", "classification")]


def test_inspect_finds_label_issues_with_the_run(run, tmp_path):
    """`data_pipelines.inspect --run`: the run's own probabilities on the training split go
    through cleanlab; each row names its image, the given label and the model's."""
    import pandas as pd  # pylint: disable=import-outside-toplevel
    from data_pipelines.inspect import main as inspect  # pylint: disable=import-outside-toplevel
    from data_pipelines.label_issues import classification_issues  # pylint: disable=import-outside-toplevel
    from train.label_eval import predict_labels  # pylint: disable=import-outside-toplevel
    from train.run_dir import load_run  # pylint: disable=import-outside-toplevel

    cfg, summary = run
    config_file = os.path.join(summary["run"], "config.yaml")
    out = tmp_path / "inspect"
    assert _patched(inspect, ["--config", config_file, "--run", summary["run"], "--out",
                              str(out), "--no-image-checks", "--exclude-label-issues"]) == 0
    issues = pd.read_csv(out / "issues.csv", keep_default_na=False)
    labels = issues[issues["issue"].isin(["label_issue", "tag_issue"])]
    _, model, classes = _patched(load_run, summary["run"])
    pred = predict_labels(model, cfg, 1, "train", "shape")
    known = pred["mask"].max(axis=1) > 0
    expected = {os.path.relpath(pred["paths"][i], cfg.data.datasets[1].root)
                for i in np.flatnonzero(known)[classification_issues(
                    pred["probs"][known], pred["labels"][known].argmax(axis=1))]}
    assert set(labels[labels["dataset"] == "shape_folder"]["file"]) == expected
    assert set(labels["split"]) <= {"train"} and labels["exclude"].all()
    names = classes["shape"]["names"]
    for row in labels[labels["issue"] == "label_issue"].itertuples():
        given = row.file.split("/")[1]  # train/<class>/<file>
        assert f"labelled '{given}'" in row.detail and given in names
    excluded = (out / "shape_folder" / "exclude.txt").read_text().split("\n")
    assert expected <= set(excluded)
    assert "label checks with run" in (out / "report.md").read_text()
