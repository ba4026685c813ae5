"""Unit tests of the training package's pure parts: schedule, run folders, comparison table."""
import csv
import os

import keras
import numpy as np
import pytest

from effdet_tf.config import config_from_dict
from effdet_tf.errors import ConfigError
from train.callbacks import DetectorCheckpoint, HeadSumValLoss
from train.compare import markdown, summarise, variant
from train.evaluate import to_original_xywh
from train.progress import epoch_line
from train.run_dir import load_run_config, prepare_run_dir
from train.fit import _optimizer
from train.schedules import WarmupCosine, capped_warmup_steps


def _cfg(tmp_path, *overrides):
    base = {"data": {"datasets": [{"name": "a", "root": "x"}, {"name": "b", "root": "y"}]},
            "train": {"run_dir": str(tmp_path / "{name}")}}
    return config_from_dict(base, list(overrides))


def test_warmup_cosine_shape():
    """Warm-up rises linearly to the base rate, then cosine decays to the final rate."""
    sched = WarmupCosine(base_lr=0.1, total_steps=100, warmup_steps=10, warmup_factor=0.1)
    values = [float(sched(s)) for s in (0, 5, 10, 55, 100)]
    assert values[0] == pytest.approx(0.01)
    assert values[1] == pytest.approx(0.055)
    assert values[2] == pytest.approx(0.1)
    assert values[3] == pytest.approx(0.05, abs=1e-6)
    assert values[4] == pytest.approx(0.0, abs=1e-7)
    assert WarmupCosine(**sched.get_config()).get_config() == sched.get_config()


def _warmup(optimizer):
    return optimizer.get_config()["learning_rate"]["config"]["warmup_steps"]


def test_warmup_steps_are_capped_by_a_fraction_of_the_run(tmp_path):
    """`warmup_epochs` epochs of steps, but never more than `warmup_max_fraction` of the
    run; the fit CLI's schedule follows both settings."""
    assert capped_warmup_steps(1, 0.1, steps_per_epoch=70, total_steps=700) == 70
    assert capped_warmup_steps(3, 0.1, steps_per_epoch=70, total_steps=700) == 70
    assert capped_warmup_steps(3, 0.3, steps_per_epoch=70, total_steps=700) == 210
    assert capped_warmup_steps(1, 0.1, steps_per_epoch=13, total_steps=130) == 13
    assert capped_warmup_steps(0, 0.3, steps_per_epoch=13, total_steps=130) == 0
    assert capped_warmup_steps(2.5, 1.0, steps_per_epoch=10, total_steps=40) == 25
    cfg = _cfg(tmp_path, "train.warmup_epochs=3", "train.warmup_max_fraction=0.3")
    assert _warmup(_optimizer(cfg, total_steps=700, steps_per_epoch=70)) == 210
    cfg = _cfg(tmp_path, "train.warmup_epochs=3")
    assert _warmup(_optimizer(cfg, total_steps=700, steps_per_epoch=70)) == 70


def test_warmup_max_fraction_is_checked(tmp_path):
    """A cap outside [0, 1] is a one-line config error naming the key."""
    assert _cfg(tmp_path).train.warmup_max_fraction == 0.1
    with pytest.raises(ConfigError, match=r"train.warmup_max_fraction: 1.5 must be in \[0, 1\]"):
        _cfg(tmp_path, "train.warmup_max_fraction=1.5")


def test_run_dir_resume_refuse_overwrite(tmp_path):
    """Same config resumes; another config or a finished run is refused; overwrite restarts."""
    cfg = _cfg(tmp_path)
    run, resuming = prepare_run_dir(cfg)
    assert not resuming
    (tmp_path / "experiment" / "log.csv").write_text("x", encoding="utf-8")
    assert prepare_run_dir(cfg) == (run, True)
    with pytest.raises(ConfigError, match=r"another config \(train.epochs: 30 in the folder"):
        prepare_run_dir(_cfg(tmp_path, "train.epochs=5"))
    (tmp_path / "experiment" / "model.keras").write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match="finished run"):
        prepare_run_dir(cfg)
    assert prepare_run_dir(_cfg(tmp_path, "train.epochs=5"), overwrite=True) == (run, False)
    assert not (tmp_path / "experiment" / "log.csv").exists()


@pytest.mark.parametrize("section, key, now, before", [
    ("model", "head_norm", "group", "batch"),
    ("data", "cross_background", True, False),
    ("model", "detection_towers", "shared", "per_head"),
])
def test_run_made_before_a_setting_reads_as_trained(tmp_path, section, key, now, before):
    """A run folder whose config.yaml predates a setting whose default changed when it
    came reads with the value it was trained with, and resuming it with the new default
    is refused naming the key."""
    run, _ = prepare_run_dir(_cfg(tmp_path))
    cfg_file = os.path.join(run, "config.yaml")
    assert getattr(getattr(load_run_config(cfg_file), section), key) == now
    with open(cfg_file, encoding="utf-8") as stream:
        lines = [line for line in stream if f"{key}:" not in line]
    with open(cfg_file, "w", encoding="utf-8") as stream:
        stream.writelines(lines)
    assert getattr(getattr(load_run_config(cfg_file), section), key) == before
    with pytest.raises(ConfigError, match=f"{section}.{key}"):
        prepare_run_dir(_cfg(tmp_path))


def test_run_dir_refuses_foreign_folder(tmp_path):
    """A non-empty folder that is not a run is never written into."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a run folder"):
        prepare_run_dir(_cfg(tmp_path))


def test_to_original_xywh():
    """Letterboxed boxes map back to the original frame and are clipped to it."""
    boxes = np.array([[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 300.0, 300.0]])
    out = to_original_xywh(boxes, 0.5, np.array([4.0, 0.0]), np.array([400, 500]))
    np.testing.assert_allclose(out[0], [12.0, 40.0, 80.0, 80.0])
    np.testing.assert_allclose(out[1], [0.0, 0.0, 500.0, 400.0])


def test_variant_restricts_heads(tmp_path):
    """A single-head variant keeps one dataset, its loss weight, and its own run folder."""
    cfg = _cfg(tmp_path, "model.head_loss_weights={a: 2, b: 1}")
    single = variant(cfg, heads=["b"], seed=3, out_dir=str(tmp_path), label="single_b")
    assert single.head_names == ["b"] and single.model.head_loss_weights == {"b": 1.0}
    assert single.train.seed == 3 and single.run_path == str(tmp_path / "single_b_s3")
    assert cfg.head_names == ["a", "b"]


def _run(ap_a, ap_b):
    return {"metrics": {"a": {"AP": ap_a, "AP50": ap_a + 0.2},
                        "b": {"AP": ap_b, "AP50": ap_b + 0.2}},
            "params": 100, "forward_ms": 5.0}


def test_summarise_verdict(tmp_path):
    """The verdict compares the AP difference with the noise rule."""
    results = {"two_head": [_run(0.50, 0.30)], "a": [_run(0.51, 0.0)], "b": [_run(0.0, 0.40)]}
    table = summarise(results, ["a", "b"])
    assert table["a"]["within_noise"] and not table["b"]["within_noise"]
    assert table["b"]["diff_AP"] == pytest.approx(-0.10) and not table["b"]["matches"]
    text = markdown(table, _cfg(tmp_path), [0])
    assert "| a | 0.510 | 0.500 | -0.010 |" in text and "| two-head WORSE (" in text
    better = summarise({"two_head": [_run(0.6, 0.3)], "a": [_run(0.5, 0)], "b": [_run(0, 0.3)]},
                       ["a", "b"])
    assert better["a"]["verdict"] == "two-head better" and better["a"]["matches"]
    assert better["b"]["verdict"] == "matches (within noise)"
    assert "(CPU, batch 1)" in text  # summaries from before the device was recorded
    on_gpu = {k: [dict(r, forward_device="NVIDIA H200") for r in v] for k, v in results.items()}
    assert "(NVIDIA H200, batch 1)" in markdown(summarise(on_gpu, ["a", "b"]), _cfg(tmp_path),
                                                 [0])


def test_close_mosaic_switches_mixing_for_the_last_epochs():
    """CloseMosaic turns mixing off from epoch `epochs - close` on, also when resuming."""
    from train.callbacks import CloseMosaic  # pylint: disable=import-outside-toplevel

    class Recorder:  # pylint: disable=too-few-public-methods  # an augmenter stand-in
        def __init__(self):
            self.states = []

        def set_mixing(self, enabled):
            self.states.append(enabled)

    recorder = Recorder()
    callback = CloseMosaic(recorder, epochs=5, close_epochs=2)
    for epoch in (0, 1, 2, 3, 4, 3):
        callback.on_epoch_begin(epoch)
    assert recorder.states == [True, True, True, False, False, False]
    short = Recorder()
    CloseMosaic(short, epochs=4, close_epochs=10).on_epoch_begin(0)
    assert short.states == [False]


def test_benchmark_recipe_budget_and_table(tmp_path):
    """The recipe budget is fixed, the peer is quoted, ours get ratios and seed spread."""
    from train.benchmark_recipe import budget_config, run_benchmark, table  # pylint: disable=import-outside-toplevel

    cfg = budget_config("two_head", 1, "/data", str(tmp_path), ["train.epochs=2"])
    assert [d.root for d in cfg.data.datasets] == ["/data/fruits", "/data/household"]
    assert (cfg.data.image_size, cfg.train.batch_size, cfg.train.epochs) == (128, 16, 2)
    assert cfg.run_path == str(tmp_path / "two_head_s1") and cfg.train.seed == 1
    runs = [{"metrics": {"household": {"AP": ap, "AP50": 0.6, "AP75": 0.3, "AR100": 0.5}}}
            for ap in (0.30, 0.34)]
    text = table({"household": runs}, [])
    assert "| YOLOv8s (ultralytics 8.4.190) | household | household | 1 | 0.260 |" in text
    assert "| effdet_tf | household | household | 2 | 0.320 ± 0.028 |" in text
    assert text.rstrip().endswith("| 1.23 |")  # 0.32 / 0.26
    assert not run_benchmark(["fruits"], [0], data_root="/data", out_dir=str(tmp_path),
                             report_only=True)


def test_benchmark_tasks_table_and_chart_show_the_seeds(tmp_path, monkeypatch):
    """Two seeds: mean ± sd in the table, an error bar and "2 seeds" on the chart."""
    from matplotlib.axes import Axes  # pylint: disable=import-outside-toplevel
    from train.benchmark_tasks import plot, table  # pylint: disable=import-outside-toplevel

    base = {"accuracy": 0.14, "top2_accuracy": 0.25, "balanced_accuracy": 0.1, "macro_f1": 0.03}
    runs = {"clothing": [{"metrics": {"category": {
        "accuracy": acc, "top2_accuracy": 0.85, "balanced_accuracy": 0.67, "macro_f1": 0.65,
        "baseline": base}}} for acc in (0.68, 0.74)],
            "two_head": [{"metrics": {"category": {
                "accuracy": 0.67, "top2_accuracy": 0.83, "balanced_accuracy": 0.66,
                "macro_f1": 0.63, "baseline": base}}}]}
    text = table(runs, [])
    assert "| effdet_tf | clothing | 2 | 0.710 ± 0.042 | 0.850 ± 0.000 |" in text
    assert "| effdet_tf | two_head | 1 | 0.670 | 0.830 |" in text
    drawn = []
    original = Axes.bar

    def spy(axis, *args, **kwargs):
        drawn.append((kwargs["label"], kwargs["yerr"]))
        return original(axis, *args, **kwargs)

    monkeypatch.setattr(Axes, "bar", spy)
    assert os.path.getsize(plot(runs, str(tmp_path / "tasks.png"))) > 1000
    assert [label for label, _ in drawn] == ["clothing (2 seeds)", "two_head (1 seed)"]
    assert np.allclose(drawn[0][1][0], 0.0424, atol=1e-3) and drawn[1][1] is None


def test_benchmark_tasks_tabulates_the_detection_heads_it_finds(tmp_path, monkeypatch):
    """The four-head run's detection heads get a table (no baseline row) and a panel."""
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    from train import benchmark_tasks  # pylint: disable=import-outside-toplevel

    coco = {"AP": 0.25, "AP50": 0.42, "AP75": 0.22, "AR100": 0.5}
    runs = {"clothing": [{"metrics": {"category": {
        "accuracy": 0.7, "top2_accuracy": 0.85, "balanced_accuracy": 0.67, "macro_f1": 0.65,
        "baseline": {"accuracy": 0.14, "top2_accuracy": 0.25, "balanced_accuracy": 0.1,
                     "macro_f1": 0.03}}}}],
            "all_tasks": [{"metrics": {"fruits": coco}}, {"metrics": {"fruits": dict(
                coco, AP=0.35)}}]}
    text = benchmark_tasks.table(runs, [])
    assert "**tags**" not in text and "**household**" not in text
    fruits = text.split("**fruits**")[1]
    assert "| effdet_tf | all_tasks | 2 | 0.300 ± 0.071 | 0.420 ± 0.000 |" in fruits
    assert "baseline" not in fruits
    figures = []
    real_subplots = plt.subplots

    def spy(*args, **kwargs):
        figures.append(real_subplots(*args, **kwargs))
        return figures[-1]

    monkeypatch.setattr(plt, "subplots", spy)
    benchmark_tasks.plot(runs, str(tmp_path / "tasks.png"))
    titles = [axis.get_title() for axis in figures[0][1].flat]
    assert titles == ["head 'category' on its test split", "head 'fruits' on its test split"]


def test_val_loss_is_the_heads_sum_for_every_later_callback(tmp_path):
    """HeadSumValLoss rewrites val_loss first; the checkpoint and the CSV log read the sum."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    ckpt = DetectorCheckpoint(model, str(tmp_path / "ckpt"))
    log = keras.callbacks.CSVLogger(str(tmp_path / "log.csv"))
    callbacks = keras.callbacks.CallbackList([HeadSumValLoss({"a": 1.0, "b": 1.0}), ckpt, log],
                                             model=model)
    callbacks.on_train_begin()
    # Keras' own val_loss (a batch-weighted mean) falls from epoch 1 to 2; the sum rises.
    epochs = [{"loss": 3.0, "val_loss": 2.0, "val_a_loss": 1.0, "val_b_loss": 3.0},
              {"loss": 2.5, "val_loss": 1.5, "val_a_loss": 0.5, "val_b_loss": 4.0}]
    for epoch, logs in enumerate(epochs):
        callbacks.on_epoch_end(epoch, dict(logs))
    callbacks.on_train_end()
    with open(tmp_path / "log.csv", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert [float(r["val_loss"]) for r in rows] == [4.0, 4.5]
    assert ckpt.best_epoch == 1 and ckpt.best == 4.0
    # A head without a validation loss leaves Keras' value alone.
    logs = {"val_loss": 2.0, "val_a_loss": 1.0}
    HeadSumValLoss({"a": 1.0, "b": 1.0}).on_epoch_end(0, logs)
    assert logs["val_loss"] == 2.0
    # Head loss weights count as in the train loss.
    logs = {"val_loss": 2.0, "val_a_loss": 1.0, "val_b_loss": 3.0}
    HeadSumValLoss({"a": 1.0, "b": 0.1}).on_epoch_end(0, logs)
    assert logs["val_loss"] == pytest.approx(1.3)
    line = epoch_line(1, 2, {"loss": 3.0, "a_loss": 1.0, "b_loss": 2.0, "val_loss": 4.0,
                             "val_a_loss": 1.0, "val_b_loss": 3.0}, 5.0, ("a", "b"))
    assert "loss 3 (a 1, b 2)" in line and "val loss 4 (a 1, b 3)" in line
