"""Per-epoch saves on a time interval: the schedule, the two callbacks and the resume log."""
import csv
import json

import keras
import numpy as np

from train.callbacks import DetectorCheckpoint, EpochBackupAndRestore, SaveSchedule
from train.run_dir import backup_epochs, keep_log_rows


class FakeClock:
    """A clock the test moves."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.zeros((4, 3)), np.zeros((4, 2)), epochs=1, verbose=0)
    return model


def test_schedule_interval_last_epoch_and_one_answer_per_epoch():
    """Due after the interval since the last save, and at the last epoch, once per epoch."""
    clock = FakeClock()
    schedule = SaveSchedule(60.0, epochs=5, clock=clock)
    answers = []
    for epoch, now in enumerate([10.0, 70.0, 80.0, 200.0, 210.0]):
        clock.now = now
        answers.append(schedule.due(epoch))
        clock.now += 100.0  # a second caller at the same epoch gets the same answer
        assert schedule.due(epoch) == answers[-1]
    assert answers == [False, True, False, True, True]
    every = SaveSchedule(0.0, epochs=3, clock=FakeClock())
    assert [every.due(e) for e in range(3)] == [True, True, True]


def test_checkpoint_follows_schedule_and_skips_non_finite(tmp_path):
    """last.weights.h5 only when due; best whenever it improves; nothing on a NaN epoch."""
    model = _model()
    clock = FakeClock()
    ckpt = DetectorCheckpoint(model, str(tmp_path), schedule=SaveSchedule(60.0, 10, clock))
    ckpt.on_epoch_end(0, {"loss": 1.0, "val_loss": 2.0})
    assert not (tmp_path / "last.weights.h5").exists()
    assert (tmp_path / "best.weights.h5").exists() and ckpt.best_epoch == 1
    clock.now = 61.0
    ckpt.on_epoch_end(1, {"loss": float("nan"), "val_loss": 1.0})
    assert not (tmp_path / "last.weights.h5").exists() and ckpt.best_epoch == 1
    ckpt.on_epoch_end(2, {"loss": 0.5, "val_loss": 1.5})
    assert (tmp_path / "last.weights.h5").exists() and ckpt.best_epoch == 3
    (tmp_path / "last.weights.h5").unlink()
    ckpt.on_epoch_end(3, {"loss": 0.4, "val_loss": 1.6})  # not due: written at train end
    assert not (tmp_path / "last.weights.h5").exists()
    ckpt.on_train_end()
    assert (tmp_path / "last.weights.h5").exists()
    (tmp_path / "last.weights.h5").unlink()
    ckpt.on_epoch_end(4, {"loss": 0.4, "val_loss": 1.6})
    ckpt.on_epoch_end(5, {"loss": float("nan"), "val_loss": 1.6})
    ckpt.on_train_end()  # stopped by a NaN: the bad weights are not written
    assert not (tmp_path / "last.weights.h5").exists()


def test_backup_follows_schedule(tmp_path):
    """The resume backup is written only at the epochs the schedule names."""
    model = _model()
    clock = FakeClock()
    backup = EpochBackupAndRestore(str(tmp_path / "backup"),
                                   schedule=SaveSchedule(60.0, 4, clock))
    backup.set_model(model)
    backup.on_epoch_end(0, {"loss": 1.0})
    assert backup_epochs(str(tmp_path / "backup")) == 0
    clock.now = 60.0
    backup.on_epoch_end(1, {"loss": 1.0})
    assert backup_epochs(str(tmp_path / "backup")) == 2
    backup.on_epoch_end(2, {"loss": 1.0})
    assert backup_epochs(str(tmp_path / "backup")) == 2
    backup.on_epoch_end(3, {"loss": float("inf")})  # last epoch, but its weights are bad
    assert backup_epochs(str(tmp_path / "backup")) == 2
    backup.on_epoch_end(3, {"loss": 1.0})
    assert backup_epochs(str(tmp_path / "backup")) == 4


def test_keep_log_rows(tmp_path):
    """A resumed run's log keeps the epochs its backup holds, header included."""
    log = tmp_path / "log.csv"
    with open(log, "w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["epoch", "loss"])
        writer.writerows([[e, 1.0 / (e + 1)] for e in range(5)])
    keep_log_rows(str(log), 3)
    with open(log, encoding="utf-8") as stream:
        assert [int(r["epoch"]) for r in csv.DictReader(stream)] == [0, 1, 2]
    keep_log_rows(str(log), 0)
    assert log.read_text(encoding="utf-8").strip() == "epoch,loss"
    keep_log_rows(str(tmp_path / "missing.csv"), 2)  # no log yet: nothing to do
    assert backup_epochs(str(tmp_path / "no_backup")) == 0
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "training_metadata.json").write_text(json.dumps({"epoch": 7}))
    assert backup_epochs(str(tmp_path / "b")) == 7
