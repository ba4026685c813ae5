"""The `classification` head kind: one class per image (softmax), top-k outputs.

Targets are `labels/<head>` (one-hot, or soft after CutMix / Mosaic / MixUp mix images)
and `label_mask/<head>` (a row of ones where the image's class is known, zeros where it
is missing: the image then trains the other heads only).
"""
from typing import Any, Dict, Optional, Sequence

import keras
import numpy as np
from keras import ops

from effdet_tf.errors import ConfigError
from effdet_tf.image_head import ImageHead
from effdet_tf.heads import TensorLike

DEFAULT_TOP_K = 2


@keras.saving.register_keras_serializable(package="effdet_tf")
class ClassificationHead(ImageHead):  # pylint: disable=abstract-method  # add_metric is a Keras stub
    """Softmax classifier on pooled features, the backbone's C5 by default (see
    `effdet_tf.image_head`).

    Args:
        num_classes: classes.
        image_size: side of the square model input.
        label_smoothing: target `(1 - e) * y + e / C`.
        class_weights: per-class loss weights in class order (an example weighs
            `sum_c y_c * w_c`; the loss is the weighted mean over the known examples), or
            None for equal weights. `train.fit` turns the config value "balanced" into
            `total / (C * count_c)` of the training labels before the model is built.
        top_k: classes returned per image by `postprocess` and the export (at most `C`).
        **kwargs: `ImageHead` arguments (`width`, `dropout`, ...).

    Raises:
        ConfigError: class weights of the wrong length or not positive, a bad smoothing
            or top-k.

    Example:
        >>> head = ClassificationHead(num_classes=10, image_size=128, name="category")
        >>> head(pyramid)["logits"].shape
        (B, 10)
    """

    loss_components = ("ce_loss",)
    default_pool = "c5"  # test top-1 0.567 vs 0.454 for "pyramid" on clothing (results.md)

    def __init__(self, *, num_classes: int, image_size: int, label_smoothing: float = 0.0,
                 class_weights: Optional[Sequence[float]] = None, top_k: int = DEFAULT_TOP_K,
                 **kwargs) -> None:
        super().__init__(num_classes=num_classes, image_size=image_size, **kwargs)
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ConfigError(f"head {self.name!r}: label_smoothing {label_smoothing} must "
                              "be in [0, 1)")
        if class_weights is not None:
            class_weights = [float(w) for w in class_weights]
            if len(class_weights) != num_classes or min(class_weights) <= 0.0:
                raise ConfigError(f"head {self.name!r}: class_weights must be {num_classes} "
                                  f"positive numbers, got {class_weights}")
        if int(top_k) < 1:
            raise ConfigError(f"head {self.name!r}: top_k must be >= 1, got {top_k}")
        self.label_smoothing = float(label_smoothing)
        self.class_weights = class_weights
        self.top_k = min(int(top_k), num_classes)

    def compute_loss(self, y_true: dict, y_pred: dict, example_mask: TensorLike,
                     context: dict) -> Dict[str, object]:
        """Softmax cross-entropy over the examples with a known class.

        Args:
            y_true: the batch with `labels/<head>` and `label_mask/<head>`.
            y_pred: `{"logits"}` of this head.
            example_mask: float32 `[B]`, 1 for the examples routed to this head.
            context: per-batch cache; `"cross_replica_sum"` (optional) sums a scalar over
                replicas, so the mean is over the global batch.

        Returns:
            `{"ce_loss": scalar}`.
        """
        labels, known = self.labels_and_mask(y_true)
        mask = ops.cast(example_mask, "float32") * ops.max(known, axis=-1)
        targets = labels * (1.0 - self.label_smoothing) + self.label_smoothing / self.num_classes
        log_probs = ops.log_softmax(ops.cast(y_pred["logits"], "float32"), axis=-1)
        per_example = -ops.sum(targets * log_probs, axis=-1)
        if self.class_weights is not None:
            weights = ops.convert_to_tensor(np.asarray(self.class_weights, np.float32))
            mask = mask * ops.sum(labels * weights[None, :], axis=-1)
        total = self.global_sum(context, ops.stop_gradient(ops.sum(mask)))
        return {"ce_loss": ops.sum(per_example * mask) / ops.maximum(total, 1e-6)}

    def _example_labels(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        return np.eye(self.num_classes)[rng.integers(0, self.num_classes, batch_size)]

    def postprocess(self, y_pred: dict) -> dict:
        """Class probabilities and the `top_k` best classes.

        Args:
            y_pred: `{"logits"}` of this head.

        Returns:
            `{"probabilities": [B, C], "top_classes": int32 [B, k], "top_scores": [B, k]}`.
        """
        probabilities = ops.softmax(ops.cast(y_pred["logits"], "float32"), axis=-1)
        scores, classes = ops.top_k(probabilities, self.top_k)
        return {"probabilities": probabilities, "top_classes": ops.cast(classes, "int32"),
                "top_scores": scores}

    def serving_outputs(self, y_pred: dict, context: Any) -> Dict[str, Any]:
        """Probabilities, the top-k classes and their scores (and names when asked).

        Args:
            y_pred: `{"logits"}` of the letterboxed frames.
            context: the export's `ServingContext` (`with_names`, `class_names`).

        Returns:
            `probabilities` float32 `[B, C]`, `top_classes` int32 `[B, k]`, `top_scores`
            float32 `[B, k]`, and `top_names` string `[B, k]` with names.
        """
        out = self.postprocess(y_pred)
        if context.with_names:
            from effdet_tf import nms_tf  # pylint: disable=import-outside-toplevel  # TF-only, export only

            out["top_names"] = nms_tf.class_names(context.class_names[self.name],
                                                  out["top_classes"])
        return out

    def get_config(self) -> dict:
        """Returns the layer config.

        Returns:
            The config dict.
        """
        config = super().get_config()
        config.update({"label_smoothing": self.label_smoothing,
                       "class_weights": self.class_weights, "top_k": self.top_k})
        return config
