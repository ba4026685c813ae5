"""Training speed: async-safe fit callbacks, the step-finish clock, the throughput command."""
import json
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from effdet_tf.config import config_from_dict, dump_config
from train import callbacks as cbs
from train import throughput
from train.fit import _callbacks  # pylint: disable=protected-access  # the list fit uses
from train.progress import EpochProgress
from tests.backbones import use_stand_in
from tests.tiny_run import sample_data, tiny_config


def _async_safe(callbacks):
    """Keras' rule: a batch-end hook without `async_safe = True` makes it wait each step."""
    base = keras.callbacks.Callback
    return all(getattr(c, "async_safe", False)
               or all(getattr(type(c), hook) is getattr(base, hook)
                      for hook in ("on_batch_end", "on_train_batch_end", "on_test_batch_end"))
               for c in callbacks)


def test_fit_callbacks_let_keras_overlap_steps(tmp_path):
    """Every callback train.fit passes is async-safe, so JAX does not wait after each step.

    Before: NanGuard, Throughput, EpochProgress, Keras' TensorBoard and BackupAndRestore
    had batch-end hooks without `async_safe`, and Keras synchronised every step.
    """
    cfg = config_from_dict({"data": {"datasets": [{"name": "a", "root": "x"}]},
                            "train": {"run_dir": str(tmp_path / "{name}"), "patience": 3}})
    detector = types.SimpleNamespace(head_loss_weights={"a": 1.0})
    callbacks, *_ = _callbacks(cfg, str(tmp_path / "run"), detector, steps=4,
                               resuming=False, verbose=1)
    assert any(isinstance(c, EpochProgress) for c in callbacks)
    callbacks += [cbs.RefreshBatchNorm(None, iter([]), 1), cbs.CloseMosaic(None, 3, 1)]
    assert _async_safe(callbacks)
    assert not _async_safe(
        [keras.callbacks.TensorBoard(str(tmp_path / "tb"))])
    assert not _async_safe([throughput._wait_each_step()])  # pylint: disable=protected-access


def test_throughput_rate_from_step_finish_times(monkeypatch):
    """Per-epoch rate from finish times (any order); compile steps skipped; median."""
    clock = iter([0.0, 1.0, 2.0, 4.0, 3.0, 10.0, 10.5, 11.0, 11.5])
    monkeypatch.setattr(cbs.time, "perf_counter", lambda: next(clock))
    speed = cbs.Throughput(batch_size=8, skip=2)
    assert speed.images_per_second == 0.0
    speed.on_epoch_begin(0)
    for batch in range(5):  # timed: 2.0, 4.0, 3.0 -> 2 intervals over 2 s
        speed.on_train_batch_end(batch)
    speed.on_epoch_end(0)
    speed.on_epoch_begin(1)
    for batch in range(4):  # 0.5 s apart
        speed.on_train_batch_end(batch)
    speed.on_epoch_end(1)
    assert speed.epoch_rates == pytest.approx([8.0, 16.0])
    assert speed.images_per_second == pytest.approx(12.0)


def test_nan_guard_keeps_the_first_bad_step_when_reported_out_of_order(tmp_path):
    """Worker threads may report step 7 before step 5: the message names step 5."""

    class _Model:
        stop_training = False

    guard = cbs.NanGuard(steps_per_epoch=10, last_good=str(tmp_path / "last.weights.h5"))
    guard.set_model(_Model())
    guard.on_train_batch_end(6, {"loss": float("nan")})
    guard.on_train_batch_end(4, {"loss": float("inf")})
    guard.on_train_batch_end(8, {"loss": float("nan")})
    assert guard.failure.startswith("non-finite loss at step 5 ")
    assert guard.model.stop_training


def test_timers_and_table():
    """Pipeline and fit timers return one time per window; the table gives ratios."""
    data = tf.data.Dataset.from_tensors(np.zeros((2, 3), np.float32)).repeat()
    assert len(throughput.time_pipeline(data, steps=3, windows=2)) == 2
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    pairs = tf.data.Dataset.from_tensors((np.zeros((2, 3), np.float32),
                                          np.zeros((2, 1), np.float32))).repeat()
    times = throughput.time_fit(model, pairs, steps=2, windows=2)
    assert len(times) == 3 and all(t > 0 for t in times)
    rows = {"input pipeline": {"img_per_s": 400.0},
            "model, one fixed batch": {"img_per_s": 100.0, "train_tflops": 10.0},
            "build": {"seconds": 3.0}}
    table = throughput.format_rows("x", rows, peak=1000.0)
    assert "| input pipeline | 400.0 | 4.00 | - | - |" in table
    assert "| model, one fixed batch | 100.0 | 1.00 | 10 | 1.0% |" in table
    assert "- build: seconds 3.0" in table
    assert throughput.device_peak("NVIDIA H200") == 989.0
    assert throughput.device_peak("cpu") is None
    assert throughput.median_rate([1.0, 2.0, 4.0], images=8) == 4.0


def test_throughput_cli_names_an_unknown_head(tmp_path, capsys):
    """`--single` with a head the config lacks is a one-line error before any work."""
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  datasets:\n    - {name: a, root: nowhere}\n")
    with pytest.raises(SystemExit):
        throughput.main(["--config", str(config), "--single", "b"])
    err = capsys.readouterr().err
    assert "--single b: no such head" in err and "heads: a" in err


def test_throughput_between_epoch_rows(tmp_path_factory, tmp_path, monkeypatch):
    """`--no-train` times every piece of work between epochs, checkpoint writes included,
    and leaves no checkpoint files behind."""
    use_stand_in(monkeypatch)  # the rows, not their values
    sample = sample_data(tmp_path_factory)
    config = tmp_path / "tiny.yaml"
    config.write_text(dump_config(tiny_config(sample["root"], tmp_path / "run")),
                      encoding="utf-8")
    out = tmp_path / "rows.json"
    assert throughput.main(["--config", str(config), "--no-train", "--out", str(out)]) == 0
    rows = json.loads(out.read_text(encoding="utf-8"))["variants"]["all heads: shapes, signs"]
    timed = ["BN refresh", "validation pass", "weights write (last or best)",
             "resume backup write (weights + optimizer, previous kept)",
             "test-split detections (first head)", "evaluation forward, one batch, traced",
             "evaluation forward, one batch, eager call (reference)"]
    assert [name for name in rows if name in timed] == timed
    assert all(rows[name]["seconds"] > 0 for name in timed)
    assert rows["evaluation forward: traced speed / eager speed"]["ratio"] > 0
    assert rows["model"]["train_gflops_per_image"] > 0
    assert not list(tmp_path.glob("**/*.weights.h5"))
