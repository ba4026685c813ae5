"""Terminal progress of a training run: honest ETAs, one summary line per epoch.

Keras' own progress bar times the first step, which includes compiling the train step
(a minute or more on a CPU), and so opens with an ETA of hours. `EpochProgress` says
"compiling" while that step runs, starts its bar's clock after it, and ends every epoch
with one line: the losses (train and validation, per head), the learning rate and the
epoch's wall time. The bar is drawn only on a terminal; in a log file only the
epoch lines appear.
"""
import sys
import threading
import time
from typing import Dict, Optional

import keras
from tqdm import tqdm


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def epoch_line(epoch: int, epochs: int, logs: Dict[str, float], seconds: float,
               heads: tuple = ()) -> str:
    """One line summing up an epoch.

    Args:
        epoch: 1-based epoch number.
        epochs: planned epochs.
        logs: the epoch's logs (`loss`, `val_loss`, `<head>_loss`, `learning_rate`, ...).
        seconds: the epoch's wall time.
        heads: head names whose losses are listed.

    Returns:
        e.g. `epoch 2/4  62 s  loss 1.93 (shapes 0.98, signs 0.95)  val loss 2.1 (...)  lr 0.002`.
    """
    parts = [f"epoch {epoch}/{epochs}", f"{seconds:.0f} s"]
    for prefix, label in (("", "loss"), ("val_", "val loss")):
        if f"{prefix}loss" not in logs:
            continue
        # What log.csv holds: under train.fit, `val_loss` is the heads' sum
        # (train.callbacks.HeadSumValLoss), on the scale of the train loss.
        text = f"{label} {_fmt(logs[f'{prefix}loss'])}"
        per_head = {h: logs[f"{prefix}{h}_loss"] for h in heads if f"{prefix}{h}_loss" in logs}
        if per_head:
            text += " (" + ", ".join(f"{h} {_fmt(v)}" for h, v in per_head.items()) + ")"
        parts.append(text)
    if "learning_rate" in logs:
        parts.append(f"lr {logs['learning_rate']:.3g}")
    return "  ".join(parts)


class EpochProgress(keras.callbacks.Callback):
    """A per-step bar that leaves out graph compilation, and a line per epoch.

    Args:
        epochs: planned epochs.
        steps: steps per epoch.
        heads: head names, for the per-head losses of the epoch line.
        bar: draw the per-step bar (only on a terminal either way).
        stream: where lines go (default stdout).
    """

    def __init__(self, epochs: int, steps: int, heads: tuple = (), *, bar: bool = True,
                 stream=None):
        super().__init__()
        self.epochs = epochs
        self.steps = steps
        self.heads = tuple(heads)
        self.bar_wanted = bar
        self.stream = stream or sys.stdout
        self._bar: Optional[tqdm] = None
        self._epoch = 0
        self._epoch_start = 0.0
        self._compiled = False
        self._lock = threading.Lock()

    # Under JAX the batch-end hook runs in Keras' worker threads (steps overlap).
    async_safe = True

    def _say(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def on_epoch_begin(self, epoch, logs=None):
        """Starts the epoch clock; announces compilation before the very first step."""
        self._epoch = epoch
        self._epoch_start = time.perf_counter()
        if not self._compiled:
            self._say("compiling the training step (the first step takes a while) ...")

    def on_train_batch_end(self, batch, logs=None):
        """Advances the bar; the bar (and its clock) starts after the first step."""
        with self._lock:
            self._advance(batch, logs)

    def _advance(self, batch, logs):
        if not self._compiled:
            self._compiled = True
            self._say(f"compiled in {time.perf_counter() - self._epoch_start:.0f} s; training")
        if not self.bar_wanted:
            return
        if self._bar is None:
            self._bar = tqdm(total=self.steps, initial=batch + 1, file=self.stream,
                             desc=f"epoch {self._epoch + 1}/{self.epochs}", unit="step",
                             leave=False, disable=None, dynamic_ncols=True)
        else:
            self._bar.update(1)
        if logs and "loss" in logs:
            self._bar.set_postfix_str(f"loss {_fmt(float(logs['loss']))}", refresh=False)

    def on_test_begin(self, logs=None):
        """Notes validation on the bar."""
        if self._bar is not None:
            self._bar.set_description_str(f"epoch {self._epoch + 1}/{self.epochs} validating")

    def on_epoch_end(self, epoch, logs=None):
        """Closes the bar and prints the epoch line."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        logs = {k: float(v) for k, v in (logs or {}).items()}
        self._say(epoch_line(epoch + 1, self.epochs, logs,
                             time.perf_counter() - self._epoch_start, self.heads))
