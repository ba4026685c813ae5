"""Building blocks shared by the BiFPN and the heads: fusion, conv+BN, resampling."""
from typing import Any, Optional, Sequence

import keras
from keras import ops

from effdet_tf.errors import ConfigError

BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3
HEAD_NORMS = ("batch", "group")
GROUP_NORM_CHANNELS = 8  # channels per group of a head's group normalisation
FUSION_EPSILON = 1e-4
TensorLike = Any  # a backend tensor, numpy array or KerasTensor


@keras.saving.register_keras_serializable(package="effdet_tf")
class FastNormalizedFusion(keras.layers.Layer):  # pylint: disable=abstract-method  # add_metric is a Keras stub
    """EfficientDet's fast normalised fusion: `sum relu(w_i) x_i / (sum relu(w) + eps)`.

    One scalar weight per input, initialised to 1.

    Args:
        epsilon: added to the weight sum.
        **kwargs: `keras.layers.Layer` arguments (name, dtype).

    Example:
        >>> FastNormalizedFusion(name="fuse")([p4, p4_up])
    """

    def __init__(self, *, epsilon: float = FUSION_EPSILON, **kwargs) -> None:
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.fusion_weights = None

    def build(self, input_shape: Sequence) -> None:
        """Creates one weight per input.

        Args:
            input_shape: list of the input shapes.

        Raises:
            ValueError: fewer than two inputs, or inputs of different shapes.
        """
        shapes = [tuple(s) for s in input_shape]
        if len(shapes) < 2 or any(s[1:] != shapes[0][1:] for s in shapes):
            raise ValueError(f"{self.name}: needs >= 2 inputs of one shape, got {shapes}")
        self.fusion_weights = self.add_weight(
            name="fusion_weights", shape=(len(shapes),), initializer="ones", trainable=True)

    def call(self, inputs: Sequence):  # pylint: disable=arguments-differ  # a list, not x
        """Fuses the inputs.

        Args:
            inputs: list of tensors of one shape.

        Returns:
            The normalised weighted sum.
        """
        weights = ops.relu(ops.cast(self.fusion_weights, inputs[0].dtype))
        total = ops.sum(weights) + ops.cast(self.epsilon, inputs[0].dtype)
        fused = inputs[0] * weights[0]
        for i in range(1, len(inputs)):
            fused = fused + inputs[i] * weights[i]
        return fused / total

    def get_config(self) -> dict:
        """Returns the layer config.

        Returns:
            The config dict.
        """
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        return config


def batch_norm(name: str) -> keras.layers.BatchNormalization:
    """Returns a BatchNormalization with EfficientDet's momentum and epsilon.

    Args:
        name: layer name.

    Returns:
        The layer.
    """
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def head_norm(kind: str, channels: int, name: str) -> keras.layers.Layer:
    """Returns the normalisation of a head's tower layer.

    Args:
        kind: `"batch"` (EfficientDet's BN: batch statistics in training, moving ones
            after) or `"group"` (group normalisation over each image's own features,
            `GROUP_NORM_CHANNELS` channels a group: the same in training and inference
            and independent of the other images of the batch, as FCOS and ATSS heads).
        channels: channels of the normalised tensor.
        name: layer name.

    Returns:
        The layer.

    Raises:
        ConfigError: unknown kind.
    """
    if kind == "batch":
        return batch_norm(name)
    if kind == "group":
        groups = max(1, channels // GROUP_NORM_CHANNELS)
        while channels % groups:
            groups -= 1
        return keras.layers.GroupNormalization(groups=groups, epsilon=BN_EPSILON, name=name)
    raise ConfigError(f"head norm must be one of {HEAD_NORMS}, got {kind!r}")


def separable_conv(filters: int, name: str, *, bias_initializer: Any = "zeros",
                   dtype: Optional[str] = None) -> keras.layers.SeparableConv2D:
    """Returns a 3x3 'same' separable convolution with bias (automl's head / BiFPN conv).

    Args:
        filters: output channels.
        name: layer name.
        bias_initializer: initializer of the bias.
        dtype: layer dtype policy (`"float32"` for final outputs under mixed precision).

    Returns:
        The layer.
    """
    return keras.layers.SeparableConv2D(
        filters, 3, padding="same", use_bias=True, bias_initializer=bias_initializer,
        depthwise_initializer=keras.initializers.VarianceScaling(),
        pointwise_initializer=keras.initializers.VarianceScaling(),
        name=name, dtype=dtype)


def conv1x1_bn(x: TensorLike, filters: int, name: str) -> TensorLike:
    """Applies a 1x1 convolution (with bias) and BN, as automl's channel resampling.

    Args:
        x: `[B, H, W, C]` tensor.
        filters: output channels.
        name: name prefix of the two layers.

    Returns:
        `[B, H, W, filters]`.
    """
    x = keras.layers.Conv2D(filters, 1, padding="same", use_bias=True, name=f"{name}_conv")(x)
    return batch_norm(f"{name}_bn")(x)


def max_pool_down(x: TensorLike, name: str) -> TensorLike:
    """Halves the resolution with a 3x3 stride-2 'same' max-pool.

    Args:
        x: `[B, H, W, C]`.
        name: layer name.

    Returns:
        `[B, ceil(H/2), ceil(W/2), C]`.
    """
    return keras.layers.MaxPooling2D(3, strides=2, padding="same", name=name)(x)


def upsample_nearest(x: TensorLike, name: str) -> TensorLike:
    """Doubles the resolution by nearest-neighbour upsampling.

    Args:
        x: `[B, H, W, C]`.
        name: layer name.

    Returns:
        `[B, 2H, 2W, C]`.
    """
    return keras.layers.UpSampling2D(2, interpolation="nearest", name=name)(x)
