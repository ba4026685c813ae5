"""The training model: one forward and one backward pass over every head.

`DetectorTrainer` wraps a `MultiHeadDetector`. Its loss is the detector's
`compute_loss`: every head's focal + box loss, each masked by the examples' dataset id,
summed. Under the TensorFlow backend its `train_step` first runs the YOLOv4
augmentation on the device (on the raw batch, inside the same compiled step); under
JAX, Keras' own `train_step` runs and the augmentation happens in tf.data.
"""
from typing import Any, Callable, Dict, Optional

import keras
import tensorflow as tf

from effdet_tf.batch_schema import split_batch


# Keras declares fit/add_metric abstract in backend mixins it fills in at import time.
class DetectorTrainer(keras.Model):  # pylint: disable=abstract-method
    """Trains a multi-head detector with a single forward and backward pass.

    Args:
        detector: the `MultiHeadDetector` to train (its weights are the ones saved).
        augmenter: optional callable `(raw_batch, seed[2]) -> raw_batch` run inside the
            train step (TensorFlow backend only).
        seed: base seed of the on-device augmentation; the step number is folded in.
        **kwargs: passed to `keras.Model`.
    """

    def __init__(self, detector: keras.Model, *,
                 augmenter: Optional[Callable[[Dict[str, Any], Any], Dict[str, Any]]] = None,
                 seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.detector = detector
        self.augmenter = augmenter
        self.seed = int(seed)

    def call(self, inputs, training=None):  # pylint: disable=arguments-differ  # Keras' own form
        """Runs the detector; returns its per-head output dict."""
        return self.detector(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The detector's masked multi-head loss (per-head losses tracked as metrics)."""
        return self.detector.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                          training=training)

    @property
    def metrics(self):
        """Keras' loss tracker followed by the detector's per-head loss trackers."""
        own = super().metrics
        seen = {id(m) for m in own}
        return own + [m for m in self.detector.metrics if id(m) not in seen]

    def train_step(self, *args):
        """TensorFlow: augment the raw batch on the device, then Keras' step on it.

        Under JAX the signature is `(state, data)` and the batch is already `(x, y)`.
        """
        if keras.backend.backend() != "tensorflow":
            return super().train_step(*args)
        (data,) = args
        if isinstance(data, dict):
            if self.augmenter is not None:
                step = tf.cast(self.optimizer.iterations, tf.int32)
                data = self.augmenter(data, tf.stack([tf.constant(self.seed, tf.int32), step]))
            data = split_batch(data)
        return super().train_step(data)

    def test_step(self, *args):
        """Accepts raw batches (dicts) as well as `(x, y)` pairs."""
        if keras.backend.backend() == "tensorflow" and isinstance(args[0], dict):
            return super().test_step(split_batch(args[0]))
        return super().test_step(*args)
