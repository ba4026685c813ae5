"""End to end on the embedded sample data: fit, evaluate, predict (resume after kill -9:
tests/test_fit_resume.py).

The run is tiny (128 px, a few steps, the stand-in backbone of tests/backbones.py in this
process and in the CLIs it starts) so it proves the plumbing, not accuracy; the quickstart
notebook's test runs the same CLIs with CSPDarknet53.
"""
import csv
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from effdet_tf.config import dump_config
from tests.backbones import STAND_IN_MAX_BYTES, use_stand_in
from tests.conftest import REPO_ROOT
from tests.tiny_run import sample_data, tiny_config
from train.callbacks import NanGuard


@pytest.fixture(name="stand_in", scope="module", autouse=True)
def fixture_stand_in():
    """The stand-in backbone here and, through the environment, in every CLI started."""
    with pytest.MonkeyPatch.context() as patch:
        use_stand_in(patch)
        yield


@pytest.fixture(name="sample", scope="module")
def fixture_sample(tmp_path_factory):
    """Small sample datasets (16 train, 8 val, 8 test images per dataset)."""
    return sample_data(tmp_path_factory)


@pytest.fixture(name="finished_run", scope="module")
def fixture_finished_run(sample, tmp_path_factory):
    """One tiny two-head training run through the CLI."""
    root = tmp_path_factory.mktemp("runs")
    cfg_file = root / "tiny.yaml"
    cfg_file.write_text(dump_config(tiny_config(sample["root"], root / "run")), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "train.fit", "--config", str(cfg_file),
                           "--quiet"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=1200, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "run", proc.stdout


@pytest.mark.slow
def test_fit_writes_everything(finished_run):
    """The run folder holds config, classes, checkpoints, logs, plots and per-head metrics."""
    run, stdout = finished_run
    for rel in ("config.yaml", "classes.json", "checkpoints/last.weights.h5",
                "checkpoints/best.weights.h5", "model.keras", "log.csv", "summary.json",
                "plots/learning_curves.png", "eval_test/metrics_test.json"):
        assert (run / rel).is_file(), rel
    assert not (run / "backup").exists(), "the resume backup outlived the finished run"
    assert (run / "model.keras").stat().st_size < STAND_IN_MAX_BYTES
    with open(run / "log.csv", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 2
    for key in ("loss", "shapes_loss", "signs_loss", "val_shapes_loss", "val_signs_loss",
                "learning_rate"):
        assert key in rows[0], sorted(rows[0])
    assert float(rows[1]["learning_rate"]) < float(rows[0]["learning_rate"])
    metrics = json.loads((run / "eval_test/metrics_test.json").read_text(encoding="utf-8"))
    assert set(metrics) == {"shapes", "signs"}
    assert all(m["num_images"] == 8 for m in metrics.values())
    # By default each dataset's images train the other detection head as background.
    assert ("heads: shapes (detection) <- shapes, background: signs; signs (detection) <- "
            "signs, background: shapes") in stdout
    shares = re.search(r"share of the training images drawn: shapes ([\d.]+)%, signs ([\d.]+)% "
                       r"\(data.sampling_power 1\)", stdout)
    assert shares and float(shares[1]) + float(shares[2]) == pytest.approx(100.0, abs=0.15)
    assert ("image mixing: off (augment.close_mosaic 2 >= 2 epochs, the default for these "
            "heads)") in stdout
    assert "COCO metrics on each head's own test split" in stdout
    assert "shapes" in stdout and "signs" in stdout


@pytest.mark.slow
def test_evaluate_and_predict_cli(finished_run, sample, tmp_path):
    """train.evaluate prints the per-head table; train.predict draws every head."""
    run, _ = finished_run
    proc = subprocess.run([sys.executable, "-m", "train.evaluate", "--run", str(run),
                           "--split", "val"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "own val split" in proc.stdout
    assert (run / "eval_val" / "metrics_val.json").is_file()
    # Each head run on the other dataset's images: the table and its JSON.
    assert "datasets that do not label it (score >= 0.3" in proc.stdout
    cross = json.loads((run / "eval_val" / "cross_val.json").read_text(encoding="utf-8"))
    assert [(c["head"], c["dataset"], c["background"], c["images"]) for c in cross] == [
        ("shapes", "signs", True, 8), ("signs", "shapes", True, 8)]
    assert all(0.0 <= c["images_with_any"] <= 1.0 and c["per_image"] >= 0 for c in cross)
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-m", "train.predict", "--run", str(run),
                           "--out", str(tmp_path), "--score", "0.0", str(broken),
                           sample["composite"]],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
                          check=False, env=env)
    # The unreadable file is named and makes the exit code 1; the good image is still drawn.
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"error: {broken}: cannot read image" in proc.stderr
    assert "1 of 2 image(s) could not be read" in proc.stderr
    report = json.loads((tmp_path / "detections.json").read_text(encoding="utf-8"))
    heads = {d["head"] for d in report["composite"]["detections"]}
    assert heads == {"shapes", "signs"} and "broken" not in report
    assert (tmp_path / "composite_pred.jpg").is_file()
    assert "I0000" not in proc.stderr and "E0000" not in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
def test_prediction_grid_png(finished_run, tmp_path):
    """The prediction grid is one PNG: a row per dataset, a column per test image."""
    from PIL import Image  # pylint: disable=import-outside-toplevel

    from train.prediction_grid import prediction_grid  # pylint: disable=import-outside-toplevel

    run, _ = finished_run
    png = prediction_grid(str(run), str(tmp_path / "grid.png"), per_dataset=2, score=0.0)
    with Image.open(png) as image:
        width, height = image.size
    assert width > 500 and height > 2 * 300  # two rows of two panels at 90 dpi


@pytest.mark.slow
def test_bn_check_reads_the_runs_own_validation_loss(finished_run, tmp_path):
    """train.bn_check: with the saved statistics it gives the run's last logged val_loss
    (the same rule, two heads), every source gets a finite loss, every BN layer a shift;
    a missing weights file is one line naming it."""
    from train.bn_check import bn_check  # pylint: disable=import-outside-toplevel  # heavy

    run, _ = finished_run
    lines = []
    report = bn_check(str(run), steps=2, log=lines.append)  # in-process: no second start-up
    with open(run / "log.csv", encoding="utf-8") as stream:
        logged = float(list(csv.DictReader(stream))[-1]["val_loss"])
    sources = report["sources"]
    assert set(sources) == {"saved", "clean train", "augmented train", "mixed train",
                            "validation"}
    assert sources["saved"]["val_loss"] == pytest.approx(logged, rel=1e-4)
    assert {"shapes_loss", "signs_loss"} <= set(sources["saved"]["parts"])
    assert all(np.isfinite(row["val_loss"]) and row["max"] >= row["median"]
               for row in sources.values())
    assert len(report["layers"]) > 10
    assert all(row["mean_shift"] >= 0 and row["variance_ratio"] > 0 for row in report["layers"])
    assert any(line.startswith("mixed train") for line in lines), lines
    # The CLI quietens TensorFlow itself unless the caller set a log level (pytest's has).
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    missing = tmp_path / "nothing.weights.h5"
    proc = subprocess.run([sys.executable, "-m", "train.bn_check", "--run", str(run),
                           "--weights", str(missing)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, check=False, env=env)
    assert proc.returncode == 2 and str(missing) in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.slow
def test_grad_check_splits_the_shared_gradient_between_the_heads(finished_run):
    """train.grad_check: every head has a loss, a gradient in the shared layers and in its
    own, the shares of the summed shared gradient add up to 1, each head's own layers
    are its class prediction conv, and the heads' weighted losses add up to the loss
    training minimises."""
    from train.grad_check import grad_check, layer_groups  # pylint: disable=import-outside-toplevel  # heavy
    from train.run_dir import load_run  # pylint: disable=import-outside-toplevel  # heavy

    run, _ = finished_run
    lines = []
    report = grad_check(str(run), weights="last", steps=2, log=lines.append)
    heads = report["heads"]
    assert set(heads) == {"shapes", "signs"} and report["steps"] == 2
    assert report["groups"] == ["backbone", "bifpn", "shared head layers"]
    for row in heads.values():
        assert row["loss"] > 0 and min(row["norms"].values()) > 0
        assert all(np.isfinite(v) for v in row["norms"].values())
        assert -1.0 <= row["own_agreement"] <= 1.0
    assert sum(row["shared_share"] for row in heads.values()) == pytest.approx(1.0, abs=1e-3)
    assert -1.0 <= report["cosine"]["shapes|signs"] <= 1.0
    assert any(line.startswith("cosine of the shared gradients") for line in lines), lines
    _, detector, _ = load_run(str(run), weights="last")
    groups = layer_groups(detector)
    assert len(groups) == len(detector.trainable_variables)
    # Each head's own layers: its class prediction conv (the towers are shared).
    assert 0 < groups.count("shapes") == groups.count("signs") < groups.count("backbone")
    size = detector.image_size
    images = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    targets = {"boxes": np.asarray([[[0.1, 0.1, 0.6, 0.7]]] * 2, np.float32),
               "classes": np.zeros((2, 1), np.int32), "dataset_id": np.asarray([0, 1])}
    outputs = detector(images, training=False)
    parts = detector.head_losses(targets, outputs)
    assert list(parts) == ["shapes", "signs"] and min(float(v) for v in parts.values()) > 0
    assert float(detector.compute_loss(y=targets, y_pred=outputs)) == pytest.approx(
        sum(float(v) for v in parts.values()), rel=1e-5)


def test_bad_test_image_is_found_before_training(sample, tmp_path):
    """A corrupt test-split image fails the run up front, and leaves no run folder behind
    that would refuse the corrected config."""
    data = tmp_path / "data"
    for name in ("shapes", "signs"):
        shutil.copytree(os.path.join(sample["root"], name), data / name)
    victim = data / "signs" / "images" / "test_0003.jpg"
    victim.write_bytes(victim.read_bytes()[:200])
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(dump_config(tiny_config(str(data), tmp_path / "run")), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "train.fit", "--config", str(cfg_file)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert str(victim) in proc.stderr and "(test split)" in proc.stderr
    assert "compiling" not in proc.stdout
    assert not (tmp_path / "run").exists()


def test_nan_guard_names_the_step(tmp_path):
    """A non-finite loss stops training and the message gives step and checkpoint."""

    class _Model:
        stop_training = False

    guard = NanGuard(steps_per_epoch=10, last_good=str(tmp_path / "last.weights.h5"))
    guard.set_model(_Model())
    guard.on_epoch_begin(2)
    guard.on_train_batch_end(4, {"loss": 1.0, "a_loss": 0.5})
    assert guard.failure is None
    guard.on_train_batch_end(5, {"loss": float("nan"), "a_loss": 0.5})
    assert guard.model.stop_training
    assert "step 26 (epoch 3, batch 6)" in guard.failure and "none yet" in guard.failure
