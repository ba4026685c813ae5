"""Keras layers for the two Darknet operations Keras has no built-in layer for."""
from typing import Optional, Tuple

import keras


# Keras' Layer declares add_metric abstract-looking (raises NotImplementedError); layers
# without metrics need not override it.
# pylint: disable=abstract-method


@keras.saving.register_keras_serializable(package="effdet_tf")
class ChannelGroup(keras.layers.Layer):
    """Keeps channel group `group_id` of `groups` equal groups (`[route] groups= group_id=`).

    Args:
        groups: number of equal channel groups.
        group_id: the group kept (0-based).
        **kwargs: `keras.layers.Layer` arguments (name, dtype).
    """

    def __init__(self, groups: int, group_id: int, **kwargs):
        super().__init__(**kwargs)
        self.groups = groups
        self.group_id = group_id

    # pylint: disable-next=arguments-differ  # Keras' base declares call(*args, **kwargs)
    def call(self, inputs):
        """Slices the group's channels (last axis)."""
        width = inputs.shape[-1] // self.groups
        return inputs[..., self.group_id * width:(self.group_id + 1) * width]

    # pylint: disable-next=arguments-differ  # a single input, as in Keras' own layers
    def compute_output_shape(self, input_shape):
        """Same shape with `channels / groups` channels."""
        return tuple(input_shape[:-1]) + (input_shape[-1] // self.groups,)

    def get_config(self):
        """Returns the constructor arguments."""
        return {**super().get_config(), "groups": self.groups, "group_id": self.group_id}


@keras.saving.register_keras_serializable(package="effdet_tf")
class DarknetMaxPool2D(keras.layers.Layer):
    """Darknet's max pooling: `padding // 2` cells of -inf before, the rest after.

    Output size `(n + padding - size) // stride + 1`, as in Darknet's `maxpool_layer.c`.

    Args:
        size: square window size.
        stride: stride.
        padding: total padding per axis (Darknet default `size - 1`).
        **kwargs: `keras.layers.Layer` arguments (name, dtype).
    """

    def __init__(self, size: int, stride: int, padding: int, **kwargs):
        super().__init__(**kwargs)
        self.size = size
        self.stride = stride
        self.padding = padding

    # pylint: disable-next=arguments-differ  # Keras' base declares call(*args, **kwargs)
    def call(self, inputs):
        """Pads with -inf and max-pools with 'valid' windows."""
        before = self.padding // 2
        after = self.padding - before
        padded = keras.ops.pad(inputs, [[0, 0], [before, after], [before, after], [0, 0]],
                               constant_values=float("-inf"))
        return keras.ops.max_pool(padded, self.size, self.stride, padding="valid")

    def _out(self, n: Optional[int]) -> Optional[int]:
        return None if n is None else (n + self.padding - self.size) // self.stride + 1

    # pylint: disable-next=arguments-differ  # a single input, as in Keras' own layers
    def compute_output_shape(self, input_shape) -> Tuple:
        """Darknet's output size formula on both spatial axes."""
        return (input_shape[0], self._out(input_shape[1]), self._out(input_shape[2]),
                input_shape[3])

    def get_config(self):
        """Returns the constructor arguments."""
        return {**super().get_config(), "size": self.size, "stride": self.stride,
                "padding": self.padding}
