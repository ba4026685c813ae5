"""CSPDarknet53, the YOLOv4 backbone, written by hand in Keras 3 (keras.ops only).

The model equals layers 0-104 of AlexeyAB's `yolov4.cfg` (Bochkovskiy et al., "YOLOv4:
Optimal Speed and Accuracy of Object Detection", 2020): a 3x3 stem convolution, then five
Cross Stage Partial (CSP) stages. Each stage

1. halves the resolution with a 3x3 stride-2 convolution (the "downsample"),
2. splits into two routes by two 1x1 convolutions: a *shortcut route* kept aside and a
   *main route* that runs `n` residual blocks (1x1 conv, 3x3 conv, add),
3. merges both routes by concatenation (main first, as `[route] layers=-1,-k` does) and
   a 1x1 *transition* convolution.

Every convolution is conv (no bias) + batch norm (epsilon 1e-5, Darknet's) + Mish. Layers are
named after their cfg index (`conv_054`, `bn_054`, `mish_054`, `route_053`, ...), so Darknet
weights map by index (see `effdet_tf.darknet.load_darknet_weights`).
"""
from typing import List, Sequence, Tuple

import keras

# C3, C4 and C5: the cfg layers whose outputs feed the neck (strides 8, 16, 32).
OUTPUT_LAYERS: Tuple[int, int, int] = (54, 85, 104)
# Number of cfg layers in the backbone (0..104).
NUM_LAYERS = 105
# Darknet's batch-norm epsilon (Keras' default is 1e-3).
BN_EPSILON = 1e-5

# Per stage: (output channels, residual blocks). The first stage keeps 64 channels on both
# routes and uses 32-channel bottlenecks; the others split `channels / 2` to each route.
_STAGES: Tuple[Tuple[int, int], ...] = ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4))


def conv_bn_mish(x: keras.KerasTensor, index: int, filters: int, size: int,
                 stride: int = 1) -> keras.KerasTensor:
    """Darknet `[convolutional] batch_normalize=1 activation=mish`, named by cfg index.

    Stride-2 convolutions pad one row/column at the top/left and none at the bottom/right
    ('valid' afterwards), which equals Darknet's symmetric `size // 2` padding for 3x3
    kernels on even sizes (the bottom/right padding is never read).

    Args:
        x: input tensor (NHWC).
        index: cfg layer index, used in the layer names.
        filters: output channels.
        size: square kernel size.
        stride: 1 or 2.

    Returns:
        The activated output tensor.
    """
    if stride == 1:
        padding = "same"
    else:
        x = keras.layers.ZeroPadding2D(((1, 0), (1, 0)), name=f"pad_{index:03d}")(x)
        padding = "valid"
    x = keras.layers.Conv2D(filters, size, strides=stride, padding=padding, use_bias=False,
                            name=f"conv_{index:03d}")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99,
                                        name=f"bn_{index:03d}")(x)
    return keras.layers.Activation("mish", name=f"mish_{index:03d}")(x)


def csp_stage(x: keras.KerasTensor, start: int, channels: int,
              num_blocks: int) -> keras.KerasTensor:
    """One CSP stage: downsample, split into two routes, residual blocks, merge, transition.

    Occupies cfg layers `start .. start + 6 + 3 * num_blocks`.

    Args:
        x: input tensor.
        start: cfg index of the stage's first (downsampling) convolution.
        channels: output channels of the stage.
        num_blocks: residual blocks on the main route.

    Returns:
        The stage output (the transition convolution).
    """
    first = num_blocks == 1 and channels == 64  # stage 1 does not halve its routes
    route_channels = channels if first else channels // 2
    bottleneck = channels // 2 if first else route_channels

    down = conv_bn_mish(x, start, channels, 3, stride=2)
    shortcut_route = conv_bn_mish(down, start + 1, route_channels, 1)
    # cfg layer start + 2 is `[route] layers=-2`: the main route restarts from `down`.
    main = conv_bn_mish(down, start + 3, route_channels, 1)
    index = start + 4
    for _ in range(num_blocks):
        y = conv_bn_mish(main, index, bottleneck, 1)
        y = conv_bn_mish(y, index + 1, route_channels, 3)
        main = keras.layers.Add(name=f"shortcut_{index + 2:03d}")([y, main])
        index += 3
    main = conv_bn_mish(main, index, route_channels, 1)
    merged = keras.layers.Concatenate(axis=-1, name=f"route_{index + 1:03d}")(
        [main, shortcut_route])
    return conv_bn_mish(merged, index + 2, channels, 1)


def build_cspdarknet53(*, input_shape: Sequence = (None, None, 3),
                       name: str = "cspdarknet53") -> keras.Model:
    """Builds CSPDarknet53 (yolov4.cfg layers 0-104) as a functional Keras model.

    Args:
        input_shape: `(height, width, 3)`; `None` sizes accept any multiple of 32.
        name: model name.

    Returns:
        A model mapping RGB images in `0..1` (`[B, H, W, 3]`) to `[C3, C4, C5]`: cfg layers 54
        (256 channels, stride 8), 85 (512, stride 16) and 104 (1024, stride 32).
        26,652,512 weights in all (trainable and batch-norm statistics).
    """
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = conv_bn_mish(inputs, 0, 32, 3)
    outputs: List[keras.KerasTensor] = []
    start = 1
    for channels, num_blocks in _STAGES:
        x = csp_stage(x, start, channels, num_blocks)
        start += 7 + 3 * num_blocks
        if start - 1 in OUTPUT_LAYERS:
            outputs.append(x)
    return keras.Model(inputs, outputs, name=name)
