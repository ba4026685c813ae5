"""The `multilabel` head kind: zero, one or several tags per image (a sigmoid per tag).

Targets are `labels/<head>` (0/1 per tag, fractions after images are mixed) and
`label_mask/<head>` (1 where the tag's value is known): a missing value adds nothing to
the loss. Each tag has its own decision threshold, a non-trainable weight of the head
(0.5 until `train.fit` sets the thresholds that maximise each tag's F1 on the val split),
so the thresholds travel with the saved model and its exports.
"""
from typing import Any, Dict, Sequence

import keras
import numpy as np
from keras import ops

from effdet_tf.errors import ConfigError
from effdet_tf.heads import TensorLike
from effdet_tf.image_head import ImageHead

DEFAULT_THRESHOLD = 0.5


@keras.saving.register_keras_serializable(package="effdet_tf")
class MultiLabelHead(ImageHead):  # pylint: disable=abstract-method  # add_metric is a Keras stub
    """Sigmoid tagger on the pooled pyramid (see `effdet_tf.image_head`).

    Args:
        num_classes: tags.
        image_size: side of the square model input.
        positive_weight: weight of a known positive relative to a known negative in the
            binary cross-entropy (1: plain BCE).
        **kwargs: `ImageHead` arguments (`width`, `dropout`, ...).

    Raises:
        ConfigError: a positive weight that is not > 0.

    Example:
        >>> head = MultiLabelHead(num_classes=33, image_size=128, name="tags")
        >>> head.set_thresholds(np.full(33, 0.4))
    """

    loss_components = ("bce_loss",)

    def __init__(self, *, num_classes: int, image_size: int, positive_weight: float = 1.0,
                 **kwargs) -> None:
        super().__init__(num_classes=num_classes, image_size=image_size, **kwargs)
        if float(positive_weight) <= 0.0:
            raise ConfigError(f"head {self.name!r}: positive_weight must be > 0, "
                              f"got {positive_weight}")
        self.positive_weight = float(positive_weight)
        self.thresholds = self.add_weight(
            name="thresholds", shape=(num_classes,),
            initializer=keras.initializers.Constant(DEFAULT_THRESHOLD), trainable=False,
            dtype="float32")

    def set_thresholds(self, thresholds: Sequence[float]) -> None:
        """Sets the per-tag decision thresholds (saved with the model).

        Args:
            thresholds: `C` values in (0, 1).

        Raises:
            ValueError: the wrong number of values, or one outside (0, 1).
        """
        values = np.asarray(thresholds, np.float32).reshape(-1)
        if values.shape != (self.num_classes,) or not np.all((values > 0) & (values < 1)):
            raise ValueError(f"{self.name}: thresholds must be {self.num_classes} values in "
                             f"(0, 1), got {values.tolist()}")
        self.thresholds.assign(values)

    def compute_loss(self, y_true: dict, y_pred: dict, example_mask: TensorLike,
                     context: dict) -> Dict[str, object]:
        """Binary cross-entropy averaged over the known (image, tag) values of the batch.

        A mean per known value, as Keras' `BinaryCrossentropy` on a fully labelled batch,
        not a sum over the tags: the sum is `C` times larger (about 13 with 33 tags,
        against about 2.3 for a 10-class softmax head) and its gradient outweighed every
        other head's on the shared layers (docs/results.md, issue #15).

        Args:
            y_true: the batch with `labels/<head>` and `label_mask/<head>`.
            y_pred: `{"logits"}` of this head.
            example_mask: float32 `[B]`, 1 for the examples routed to this head.
            context: per-batch cache; `"cross_replica_sum"` (optional) sums a scalar over
                replicas, so the mean is over the global batch.

        Returns:
            `{"bce_loss": scalar}`.
        """
        labels, known = self.labels_and_mask(y_true)
        known = known * ops.cast(example_mask, "float32")[:, None]
        logits = ops.cast(y_pred["logits"], "float32")
        bce = ops.maximum(logits, 0.0) - logits * labels + ops.log1p(ops.exp(-ops.abs(logits)))
        if self.positive_weight != 1.0:
            bce = bce * (1.0 + (self.positive_weight - 1.0) * labels)
        values = self.global_sum(context, ops.stop_gradient(ops.sum(known)))
        return {"bce_loss": ops.sum(bce * known) / ops.maximum(values, 1.0)}

    def _example_labels(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        return rng.uniform(size=(batch_size, self.num_classes)) < 0.3

    def example_targets(self, batch_size: int, seed: int = 0) -> Dict[str, Any]:
        """Random tags; the last example unlabelled and one tag of the first unknown.

        Args:
            batch_size: examples.
            seed: numpy seed.

        Returns:
            `{"labels/<head>": float32 [B, C], "label_mask/<head>": float32 [B, C]}`.
        """
        targets = super().example_targets(batch_size, seed)
        labels, mask = targets.values()
        labels[0, 0], mask[0, 0] = 0.0, 0.0
        return targets

    def postprocess(self, y_pred: dict) -> dict:
        """Tag probabilities and the tags at the saved thresholds.

        Args:
            y_pred: `{"logits"}` of this head.

        Returns:
            `{"probabilities": [B, C], "tags": int32 [B, C] (1 where the probability
            reaches the tag's threshold)}`.
        """
        probabilities = ops.sigmoid(ops.cast(y_pred["logits"], "float32"))
        tags = ops.cast(probabilities >= ops.cast(self.thresholds, "float32")[None, :], "int32")
        return {"probabilities": probabilities, "tags": tags}

    def serving_outputs(self, y_pred: dict, context: Any) -> Dict[str, Any]:
        """Tag probabilities and thresholded tags.

        Args:
            y_pred: `{"logits"}` of the letterboxed frames.
            context: the export's `ServingContext` (unused: the thresholds are the head's).

        Returns:
            `probabilities` float32 `[B, C]` and `tags` int32 `[B, C]`.
        """
        del context
        return self.postprocess(y_pred)

    def get_config(self) -> dict:
        """Returns the layer config (the thresholds are a weight, saved with the weights).

        Returns:
            The config dict.
        """
        config = super().get_config()
        config.update({"positive_weight": self.positive_weight})
        return config
