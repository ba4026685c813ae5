"""Training callbacks: best/last checkpoints of the detector, and a NaN/Inf guard.

Every callback `train.fit` passes is async-safe (`async_safe = True`): under JAX, Keras
then dispatches the next training steps while a worker thread runs the batch-end
callbacks, instead of waiting for every step's loss before starting the next one (one
callback that is not async-safe makes Keras wait after every step;
`tests/test_throughput.py` checks the list `train.fit` passes).
"""
import csv
import math
import os
import statistics
import threading
import time
from typing import Any, Callable, Dict, Mapping, Optional

import keras

from train.precise_bn import recalibrate_batchnorm


def atomic_save_weights(model: keras.Model, path: str) -> None:
    """Saves weights to `path` through a temporary file, so a crash never leaves half a file.

    Args:
        model: model whose weights are saved.
        path: destination ending in `.weights.h5`.
    """
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path[: -len(".weights.h5")] + ".tmp.weights.h5"
    model.save_weights(tmp, overwrite=True)
    os.replace(tmp, path)


class SaveSchedule:
    """When the per-epoch saves (resume backup, last weights) are due.

    Due at the end of an epoch when `interval_s` seconds have passed since the last
    save (since the schedule was made, for the first), and at the end of the last
    epoch. One answer per epoch, whichever callback asks first, so the backup and the
    last weights are written at the same epochs.

    Args:
        interval_s: seconds between saves (0: every epoch).
        epochs: the run's number of epochs.
        clock: seconds now (a test passes its own).
    """

    def __init__(self, interval_s: float, epochs: int,
                 clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self.epochs = epochs
        self.clock = clock
        self._last = clock()
        self._answer = (-1, False)  # (epoch, due) of the last question

    def due(self, epoch: int) -> bool:
        """Whether the saves are due at the end of `epoch` (0-based)."""
        if self._answer[0] != epoch:
            now = self.clock()
            due = epoch + 1 >= self.epochs or now - self._last >= self.interval_s
            if due:
                self._last = now
            self._answer = (epoch, due)
        return self._answer[1]


def non_finite_losses(logs: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """The losses (keys ending in `loss`) of a Keras log dict that are NaN or infinite."""
    return {k: v for k, v in (logs or {}).items()
            if k.endswith("loss") and not math.isfinite(float(v))}


class DetectorCheckpoint(keras.callbacks.Callback):
    """Writes `last.weights.h5` when `schedule` says and `best.weights.h5` when `monitor`
    improves.

    Only the detector's weights are written (what predict and export need); the
    optimizer state for resuming lives in the BackupAndRestore folder. An epoch with a
    non-finite loss overwrites neither (the NaN guard names the last good file); when
    training ends after an epoch the schedule skipped, `last` is written then.

    Args:
        detector: the detector inside the trainer.
        folder: checkpoint folder.
        monitor: log key to minimise (falls back to `loss` when absent).
        schedule: when the last weights are written (None: every epoch).
    """

    def __init__(self, detector: keras.Model, folder: str, monitor: str = "val_loss",
                 schedule: Optional[SaveSchedule] = None):
        super().__init__()
        self.detector = detector
        self.folder = folder
        self.monitor = monitor
        self.schedule = schedule
        self.best = math.inf
        self.best_epoch: Optional[int] = None
        self._pending: Optional[int] = None  # a finished, finite epoch not yet saved as last

    @property
    def last_path(self) -> str:
        """Path of the last checkpoint."""
        return os.path.join(self.folder, "last.weights.h5")

    @property
    def best_path(self) -> str:
        """Path of the best checkpoint."""
        return os.path.join(self.folder, "best.weights.h5")

    def resume_from_log(self, csv_path: str) -> None:
        """Takes the best value so far from an interrupted run's CSV log."""
        if not os.path.isfile(csv_path):
            return
        with open(csv_path, encoding="utf-8") as stream:
            for row in csv.DictReader(stream):
                value = row.get(self.monitor) or row.get("loss")
                try:
                    if value is not None and float(value) < self.best:
                        self.best = float(value)
                        self.best_epoch = int(row["epoch"]) + 1
                except (TypeError, ValueError, KeyError):
                    continue

    def on_train_end(self, logs=None):
        """Saves last when training stopped early (e.g. EarlyStopping) after an epoch
        the schedule skipped, so `last` is the last epoch's weights."""
        if self._pending is not None:
            atomic_save_weights(self.detector, self.last_path)
            self._pending = None

    def on_epoch_end(self, epoch, logs=None):
        """Saves last when due, and best when the monitored value improved."""
        logs = logs or {}
        self._pending = None
        if non_finite_losses(logs):
            return
        if self.schedule is None or self.schedule.due(epoch):
            atomic_save_weights(self.detector, self.last_path)
        else:
            self._pending = epoch
        value = logs.get(self.monitor, logs.get("loss"))
        if value is not None and math.isfinite(float(value)) and float(value) < self.best:
            self.best = float(value)
            self.best_epoch = epoch + 1
            atomic_save_weights(self.detector, self.best_path)


class NanGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and says at which step.

    Async-safe: under JAX it checks each step's losses in a worker thread while the
    next steps run, so training stops a step or two after the bad one; the message
    names the first bad step.

    Args:
        steps_per_epoch: steps in one epoch (to report a global step number).
        last_good: path of the last good checkpoint, reported in the message.
    """

    def __init__(self, steps_per_epoch: int, last_good: str):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.last_good = last_good
        self.epoch = 0
        self.failure: Optional[str] = None
        self._failed_step = 0
        self._lock = threading.Lock()

    async_safe = True

    def on_epoch_begin(self, epoch, logs=None):
        """Remembers the epoch number."""
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        """Checks the running loss and every per-head loss."""
        bad = non_finite_losses(logs)
        if not bad:
            return
        step = self.epoch * self.steps_per_epoch + batch + 1
        with self._lock:  # worker threads may report two bad steps out of order
            if self.failure is not None and self._failed_step <= step:
                return
            kept = self.last_good if os.path.exists(self.last_good) else "none yet"
            self._failed_step = step
            self.failure = (f"non-finite loss at step {step} (epoch {self.epoch + 1}, batch "
                            f"{batch + 1}): {bad}; last good checkpoint kept: {kept}")
        self.model.stop_training = True


class Throughput(keras.callbacks.Callback):
    """Training speed from the times steps finish, leaving out the first (compiling) steps.

    Each epoch's rate is `batch_size * (n - 1) / (last - first)` over the finish times of
    its timed steps, so it holds whether Keras waits for every step (TensorFlow) or
    overlaps them (JAX, async callbacks: the finish times are then spaced by the real
    step time, input pipeline included). Validation between epochs is not counted.

    Args:
        batch_size: global batch size.
        skip: steps ignored at the start of each `fit` call (graph tracing, warm-up).
    """

    async_safe = True

    def __init__(self, batch_size: int, skip: int = 2):
        super().__init__()
        self.batch_size = batch_size
        self.skip = skip
        self.epoch_rates: list = []
        self._seen = 0
        self._finished: list = []
        self._lock = threading.Lock()

    def on_epoch_begin(self, epoch, logs=None):
        """Starts the epoch's list of step finish times."""
        self._finished = []

    def on_train_batch_end(self, batch, logs=None):
        """Records when the step finished, once past the warm-up steps."""
        now = time.perf_counter()
        with self._lock:
            self._seen += 1
            if self._seen > self.skip:
                self._finished.append(now)

    def on_epoch_end(self, epoch, logs=None):
        """Adds the epoch's rate (needs two timed steps)."""
        if len(self._finished) >= 2:
            span = max(self._finished) - min(self._finished)
            if span > 0:
                self.epoch_rates.append(self.batch_size * (len(self._finished) - 1) / span)
        self._finished = []

    @property
    def images_per_second(self) -> float:
        """Median over epochs of the training throughput (0 before any timed epoch)."""
        if not self.epoch_rates:
            return 0.0
        return statistics.median(self.epoch_rates)


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard logger, written once per epoch, marked async-safe.

    Keras' own class has a batch-end hook, which makes Keras wait after every training
    step under JAX; with `update_freq="epoch"` and no profiling it writes nothing, so
    it is skipped.
    """

    async_safe = True

    def on_train_batch_end(self, batch, logs=None):
        """Nothing per batch (epoch-level logging)."""


class EpochBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore saving at the end of the epochs `schedule` names (None:
    every epoch), marked async-safe (see `EpochTensorBoard`: its per-batch hook only
    counts batches for `save_freq` steps).

    Args:
        backup_dir: the backup folder.
        schedule: when the backup is written (None: every epoch).
        **kwargs: Keras' BackupAndRestore arguments.
    """

    async_safe = True

    def __init__(self, backup_dir: str, schedule: Optional[SaveSchedule] = None, **kwargs):
        super().__init__(backup_dir, **kwargs)
        self.schedule = schedule

    def on_train_batch_end(self, batch, logs=None):
        """Nothing per batch (the backup is written at epochs' ends)."""

    def on_epoch_end(self, epoch, logs=None):
        """Saves the backup when due (never the weights of an epoch with a non-finite loss)."""
        if non_finite_losses(logs):
            return
        if self.schedule is None or self.schedule.due(epoch):
            super().on_epoch_end(epoch, logs)


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the learning rate at the end of each epoch to the logs as `learning_rate`.

    Put it before the CSV and TensorBoard loggers, which then record it.
    """

    def on_epoch_end(self, epoch, logs=None):
        """Reads the optimizer's current learning rate (its schedule at this step)."""
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(
                self.model.optimizer.learning_rate))


def head_loss_sum(losses: Mapping[str, Any], head_weights: Mapping[str, float],
                  prefix: str = "") -> Optional[float]:
    """`sum(weight_h * losses[prefix + h + "_loss"])`: the heads' losses summed as in the
    train loss; None when a head's loss is missing.

    Args:
        losses: per-head losses keyed `<prefix><head>_loss` (Keras logs, metric results).
        head_weights: head name -> loss weight (`MultiHeadDetector.head_loss_weights`).
        prefix: "val_" for Keras' validation logs.

    Returns:
        The weighted sum, or None.
    """
    keys = {head: f"{prefix}{head}_loss" for head in head_weights}
    if not head_weights or not all(key in losses for key in keys.values()):
        return None
    return float(sum(weight * float(losses[keys[head]])
                     for head, weight in head_weights.items()))


class HeadSumValLoss(keras.callbacks.Callback):
    """Makes `val_loss` the heads' weighted sum, as the train loss is.

    Validation batches hold one dataset each (`train.data.make_val_dataset`), so Keras'
    own `val_loss` is the mean of the heads' losses weighted by their numbers of
    validation batches: 7.9 in a clothing + ccp_tags run whose heads' validation losses
    sum to 16.0. This replaces it with `sum(weight_h * val_<h>_loss)`, the weights being
    the model's head loss weights, as in the train loss. Put it first: the checkpoint's
    `best`, early stopping, the CSV log and the epoch line then read one validation loss.

    Args:
        head_weights: head name -> loss weight (`MultiHeadDetector.head_loss_weights`).
    """

    def __init__(self, head_weights: Mapping[str, float]):
        super().__init__()
        self.head_weights = dict(head_weights)

    def on_epoch_end(self, epoch, logs=None):
        """Replaces `val_loss` when every head's validation loss is in the logs."""
        total = None if logs is None else head_loss_sum(logs, self.head_weights, "val_")
        if total is not None:
            logs["val_loss"] = total


class CloseMosaic(keras.callbacks.Callback):
    """Stops image mixing (Mosaic, CutMix, MixUp) for the last `close_epochs` epochs.

    The last epochs then train on whole images, as they are evaluated (ultralytics'
    `close_mosaic`). Set at each epoch's start from the epoch number, so a resumed run
    is in the right phase.

    Args:
        augmenter: the `YoloV4Augment` of the run (its `set_mixing`).
        epochs: planned epochs.
        close_epochs: epochs at the end without mixing (0: mix to the end).
    """

    def __init__(self, augmenter, epochs: int, close_epochs: int):
        super().__init__()
        self.augmenter = augmenter
        self.first_closed = max(0, epochs - max(0, close_epochs))

    def on_epoch_begin(self, epoch, logs=None):
        """Mixing on before `first_closed`, off from it."""
        self.augmenter.set_mixing(epoch < self.first_closed)


class RefreshBatchNorm(keras.callbacks.Callback):
    """Re-estimates BN statistics from the current weights before every validation.

    BN moving averages trail the weights by about `1 / (1 - momentum)` steps; early in
    training, and all through a short run, they describe weights that no longer exist,
    so the inference-mode validation loss sits near the prior's while the training loss
    falls. Averaging the statistics of a few clean training batches at the current
    weights (precise BN) makes the validation loss, and the best checkpoint chosen by
    it, describe the model as it is. The training itself is unchanged.

    Args:
        detector: the detector inside the trainer.
        images: an iterator of clean training image batches (read on across epochs).
        steps: batches averaged each time.
    """

    def __init__(self, detector: keras.Model, images, steps: int):
        super().__init__()
        self.detector = detector
        self.images = images
        self.steps = steps

    def on_test_begin(self, logs=None):
        """Refreshes the statistics just before the validation pass."""
        recalibrate_batchnorm(self.detector, self.images, steps=self.steps, progress=False)
