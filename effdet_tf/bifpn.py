"""EfficientDet BiFPN (D0: 64 channels, 3 cells, levels P3-P7), assembled functionally."""
from typing import List, Sequence

import keras

from effdet_tf.layers import (FastNormalizedFusion, batch_norm, conv1x1_bn, max_pool_down,
                              separable_conv, upsample_nearest)

MIN_LEVEL = 3
MAX_LEVEL = 7

# (output level, input node ids): nodes 0..4 are P3..P7, node 5 onwards the new nodes
# in this order: P6', P5', P4', P3'', P4'', P5'', P6'', P7''.
BIFPN_NODES = (
    (6, (3, 4)),
    (5, (2, 5)),
    (4, (1, 6)),
    (3, (0, 7)),
    (4, (1, 7, 8)),
    (5, (2, 6, 9)),
    (6, (3, 5, 10)),
    (7, (4, 11)),
)
LAYER_PREFIX = "bifpn_"


def _node_name(level: int, node_index: int) -> str:
    """Names a node by its level and whether it is top-down or output."""
    stage = "td" if node_index < 3 else "out"
    return f"p{level}_{stage}"


def pyramid_inputs(features: Sequence, channels: int) -> List:
    """Builds P3-P7 from C3-C5: P6 = max-pool(1x1 conv+BN of C5), P7 = max-pool(P6).

    P3-P5 keep the backbone channels here; the first BiFPN cell resamples them to
    `channels` with a 1x1 conv+BN per use, as automl does.

    Args:
        features: `[C3, C4, C5]` at strides 8, 16, 32.
        channels: BiFPN width.

    Returns:
        `[P3, P4, P5, P6, P7]`.
    """
    c3, c4, c5 = features
    p6 = conv1x1_bn(c5, channels, f"{LAYER_PREFIX}p6_resample")
    p6 = max_pool_down(p6, f"{LAYER_PREFIX}p6_pool")
    p7 = max_pool_down(p6, f"{LAYER_PREFIX}p7_pool")
    return [c3, c4, c5, p6, p7]


def _resample(x, source_level: int, target_level: int, channels: int, name: str):
    """Brings a node to a level: 1x1 conv+BN if the width differs, then pool or upsample."""
    if x.shape[-1] != channels:
        x = conv1x1_bn(x, channels, f"{name}_resample")
    if source_level < target_level:
        for step in range(target_level - source_level):
            x = max_pool_down(x, f"{name}_down{step}")
    elif source_level > target_level:
        for step in range(source_level - target_level):
            x = upsample_nearest(x, f"{name}_up{step}")
    return x


def bifpn_cell(nodes: Sequence, channels: int, name: str) -> List:
    """One BiFPN cell: top-down then bottom-up fusion with fast normalised weights.

    Every new node: resample inputs, fuse, swish, separable conv 3x3, BN.

    Args:
        nodes: `[P3, P4, P5, P6, P7]`.
        channels: BiFPN width.
        name: prefix of the layer names.

    Returns:
        `[P3'', P4'', P5'', P6'', P7'']`, all with `channels` channels.
    """
    levels = list(range(MIN_LEVEL, MAX_LEVEL + 1))
    graph = list(nodes)
    for index, (level, inputs) in enumerate(BIFPN_NODES):
        node = f"{name}_{_node_name(level, index)}"
        resampled = [
            _resample(graph[i], levels[i], level, channels, f"{node}_in{k}")
            for k, i in enumerate(inputs)]
        x = FastNormalizedFusion(name=f"{node}_fuse")(resampled)
        x = keras.layers.Activation("swish", name=f"{node}_swish")(x)
        x = separable_conv(channels, f"{node}_conv")(x)
        x = batch_norm(f"{node}_bn")(x)
        graph.append(x)
        levels.append(level)
    return graph[8:13]  # P3'', P4'', P5'', P6'', P7''


def build_bifpn(features: Sequence, *, channels: int = 64, cells: int = 3) -> List:
    """Applies the whole BiFPN to backbone features (functional, Keras tensors).

    Layer names start with `bifpn_` (model_stats counts the BiFPN by this prefix).

    Args:
        features: `[C3, C4, C5]` at strides 8, 16, 32.
        channels: BiFPN width (64 in D0).
        cells: number of BiFPN cells (3 in D0).

    Returns:
        `[P3, ..., P7]` features, each `[B, S / 2**l, S / 2**l, channels]`.

    Example:
        >>> p3_p7 = build_bifpn(backbone(images), channels=64, cells=3)
    """
    nodes = pyramid_inputs(features, channels)
    for cell in range(cells):
        nodes = bifpn_cell(nodes, channels, f"{LAYER_PREFIX}cell{cell}")
    return nodes
