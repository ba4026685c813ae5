"""The shared part of the image-level head kinds (classification, multi-label): features
pooled to one vector and a linear layer to one logit per class.

`pool` chooses the features:

- "pyramid" (the multilabel kind's default): every BiFPN level through one 1x1 conv to
  `width` channels (256; shared across levels as in the detection head, one BN per
  level) and swish, averaged
  over space, the five levels concatenated (1280 features, the width of YOLOv8-cls'
  pooled features); the head trains the BiFPN the detection heads use.
- "c5" (the classification kind's default, measured better on clothing: docs/results.md):
  the backbone's last map C5 (1024 channels in CSPDarknet53) through a 1x1 conv to
  `width` channels (1280), BN and swish, averaged over space: the classic classifier
  head, one step from the backbone.

Then dropout and a dense layer to `C` float32 logits. docs/results.md measures both.

Labels come as `labels/<head>` and `label_mask/<head>` (`effdet_tf.batch_schema`), one
row per example; the subclasses define the loss over them and the outputs.
"""
from typing import Any, Dict, Optional, Sequence, Tuple

import keras
import numpy as np
from keras import ops

from effdet_tf import batch_schema as schema
from effdet_tf.errors import ConfigError
from effdet_tf.heads import TaskHead, TensorLike
from effdet_tf.layers import batch_norm

POOLS = {"pyramid": 256, "c5": 1280}  # pool -> default width
DEFAULT_DROPOUT = 0.2
PYRAMID_LEVELS = 5


class ImageHead(TaskHead):  # pylint: disable=abstract-method  # add_metric is a Keras stub
    """Pooled features -> dropout -> dense; the base of the image-level kinds.

    The detector feeds the head what its `pool` asks (`feature_source`): `[C5]` of the
    backbone or the pyramid `[P3, ..., P7]`.

    Args:
        num_classes: classes (or tags) predicted.
        image_size: side of the square model input.
        channels: BiFPN width (unused: the 1x1 conv adapts any width; kept so every kind
            takes the shared arguments).
        num_layers: unused (one 1x1 conv per level); kept like `channels`.
        pool: "c5" or "pyramid" (see the module docstring); None: the kind's
            `default_pool`.
        width: channels of the 1x1 conv (None: 256 per level for "pyramid", 1280 for "c5").
        dropout: dropout rate on the pooled features while training.
        **kwargs: `keras.layers.Layer` arguments.

    Raises:
        ConfigError: an unknown pool.
    """

    default_pool = "pyramid"  # a kind may choose "c5"

    def __init__(self, *, num_classes: int, image_size: int, channels: int = 64,
                 num_layers: int = 1, pool: Optional[str] = None, width: Optional[int] = None,
                 dropout: float = DEFAULT_DROPOUT, **kwargs) -> None:
        super().__init__(num_classes=num_classes, image_size=image_size, **kwargs)
        pool = pool or self.default_pool
        if pool not in POOLS:
            raise ConfigError(f"head {self.name!r}: pool must be one of "
                              f"{', '.join(POOLS)}, got {pool!r}")
        self.channels = channels
        self.num_layers = num_layers
        self.pool = pool
        self.width = int(width or POOLS[pool])
        self.dropout_rate = float(dropout)
        prefix = self.name
        self.expand = keras.layers.Conv2D(self.width, 1, use_bias=False,
                                          name=f"{prefix}_expand")
        levels = ["c5"] if pool == "c5" else [f"p{level}" for level in range(3, 8)]
        self.level_bns = [batch_norm(f"{prefix}_expand_bn_{level}") for level in levels]
        self.dropout = keras.layers.Dropout(self.dropout_rate, name=f"{prefix}_dropout")
        self.classify = keras.layers.Dense(num_classes, name=f"{prefix}_logits", dtype="float32")

    @property
    def target_keys(self) -> Tuple[str, ...]:  # type: ignore[override]  # per head name
        """The label and label-mask keys of this head."""
        return (schema.labels_key(self.name), schema.label_mask_key(self.name))

    @property
    def feature_source(self) -> str:
        """What the detector feeds this head: "backbone_c5" or "pyramid"."""
        return "backbone_c5" if self.pool == "c5" else "pyramid"

    def pooled(self, inputs: Sequence, training: Optional[bool] = None) -> TensorLike:
        """`[B, levels * width]`: every input map expanded, activated, averaged over space."""
        if len(inputs) != len(self.level_bns):
            raise ValueError(f"{self.name}: expected {len(self.level_bns)} levels, "
                             f"got {len(inputs)}")
        parts = []
        for bn, feature in zip(self.level_bns, inputs):
            x = ops.silu(bn(self.expand(feature), training=training))
            parts.append(ops.mean(x, axis=(1, 2)))
        return ops.concatenate(parts, axis=-1)

    def call(self, inputs: Sequence, training: Optional[bool] = None) -> dict:  # pylint: disable=arguments-differ  # a list
        """Pools the pyramid and predicts one logit per class.

        Args:
            inputs: `[C5]` or `[P3, ..., P7]` (see `feature_source`).
            training: BN and dropout mode.

        Returns:
            `{"logits": float32 [B, C]}`.
        """
        features = self.dropout(self.pooled(inputs, training), training=training)
        return {"logits": ops.cast(self.classify(features), "float32")}

    def labels_and_mask(self, y_true: dict) -> Tuple[TensorLike, TensorLike]:
        """This head's float32 `[B, C]` labels and label mask from the batch."""
        return (ops.cast(y_true[schema.labels_key(self.name)], "float32"),
                ops.cast(y_true[schema.label_mask_key(self.name)], "float32"))

    @staticmethod
    def global_sum(context: dict, value: TensorLike) -> TensorLike:
        """`value` summed over the replicas of a distributed step (itself on one device)."""
        summed = context.get("cross_replica_sum")
        return summed(value) if summed is not None else value

    def _example_labels(self, rng: np.random.Generator,
                        batch_size: int) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def example_targets(self, batch_size: int, seed: int = 0) -> Dict[str, Any]:
        """Random labels (see the subclass) with the last example's labels missing.

        Args:
            batch_size: examples.
            seed: numpy seed.

        Returns:
            `{"labels/<head>": float32 [B, C], "label_mask/<head>": float32 [B, C]}`.
        """
        rng = np.random.default_rng(seed)
        labels = self._example_labels(rng, batch_size).astype(np.float32)
        mask = np.ones_like(labels)
        if batch_size > 1:
            labels[-1] = 0.0
            mask[-1] = 0.0
        return {schema.labels_key(self.name): labels, schema.label_mask_key(self.name): mask}

    def get_config(self) -> dict:
        """Returns the layer config.

        Returns:
            The config dict.
        """
        config = super().get_config()
        config.update({"channels": self.channels, "num_layers": self.num_layers,
                       "pool": self.pool, "width": self.width, "dropout": self.dropout_rate})
        return config
