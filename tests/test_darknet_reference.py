"""Keras models against an independent numpy implementation of Darknet's arithmetic.

The numpy code below follows Darknet's C loops (convolutional_layer.c, batchnorm,
maxpool_layer.c, route_layer.c, upsample_layer.c): explicit `pad` cells on each side,
window offsets `i * stride - pad`, -inf outside the image for max pooling. It shares no code
with effdet_tf. Weights go through a Darknet-format file written here, so the loader's order
(biases, scales, mean, variance, kernel [out, in/groups, k, k]) is checked too.
"""
import numpy as np
import pytest

from effdet_tf.backbones.cspdarknet53 import build_cspdarknet53
from effdet_tf.darknet import build_darknet_model, load_darknet_weights

# ---------------------------------------------------------------- numpy Darknet arithmetic


def np_conv(x, weights, bias, *, stride, pad, groups=1):
    """Darknet convolution of one HWC image; weights [out, in/groups, k, k]."""
    out_ch, in_per_group, size, _ = weights.shape
    height, width, _ = x.shape
    padded = np.zeros((height + 2 * pad, width + 2 * pad, x.shape[2]), np.float64)
    padded[pad:pad + height, pad:pad + width] = x
    out_h = (height + 2 * pad - size) // stride + 1
    out_w = (width + 2 * pad - size) // stride + 1
    out = np.zeros((out_h, out_w, out_ch), np.float64)
    per_group = out_ch // groups
    for o in range(out_ch):
        g = o // per_group
        channels = slice(g * in_per_group, (g + 1) * in_per_group)
        for i in range(out_h):
            for j in range(out_w):
                patch = padded[i * stride:i * stride + size, j * stride:j * stride + size,
                               channels]
                out[i, j, o] = np.sum(patch * weights[o].transpose(1, 2, 0))
    return out + bias


def np_batchnorm(x, scales, mean, variance):
    """Darknet's normalize_cpu + scale_bias (biases added by the caller)."""
    return (x - mean) / np.sqrt(variance + 1e-5) * scales


def np_activate(x, name):
    """Darknet activations."""
    if name == "leaky":
        return np.where(x > 0, x, 0.1 * x)
    if name == "mish":
        return x * np.tanh(np.log1p(np.exp(x)))
    if name == "relu":
        return np.maximum(x, 0)
    if name == "logistic":
        return 1 / (1 + np.exp(-x))
    return x


def np_maxpool(x, *, size, stride, padding=None):
    """Darknet maxpool: offset -padding/2, out = (n + padding - size) / stride + 1."""
    padding = size - 1 if padding is None else padding
    height, width, channels = x.shape
    out_h = (height + padding - size) // stride + 1
    out_w = (width + padding - size) // stride + 1
    offset = -(padding // 2)
    out = np.full((out_h, out_w, channels), -np.inf)
    for i in range(out_h):
        for j in range(out_w):
            for n in range(size):
                for m in range(size):
                    r, c = offset + i * stride + n, offset + j * stride + m
                    if 0 <= r < height and 0 <= c < width:
                        out[i, j] = np.maximum(out[i, j], x[r, c])
    return out


class ConvParams:
    """Random Darknet parameters of one convolution, and their bytes in file order."""

    def __init__(self, rng, *, filters, in_channels, size, groups=1, bn=True):
        self.bn = bn
        self.biases = rng.normal(0, 0.1, filters).astype(np.float32)
        self.scales = rng.uniform(0.8, 1.2, filters).astype(np.float32)
        self.mean = rng.normal(0, 0.1, filters).astype(np.float32)
        self.variance = rng.uniform(0.5, 1.5, filters).astype(np.float32)
        fan_in = in_channels // groups * size * size
        self.weights = (rng.normal(0, 1, (filters, in_channels // groups, size, size))
                        / np.sqrt(fan_in)).astype(np.float32)

    def payload(self):
        """Values in Darknet order."""
        parts = [self.biases]
        if self.bn:
            parts += [self.scales, self.mean, self.variance]
        return np.concatenate(parts + [self.weights.ravel()])

    def forward(self, x, *, stride, pad, groups=1, activation="linear"):
        """conv (+BN) + bias + activation in numpy."""
        y = np_conv(x, self.weights.astype(np.float64), 0.0, stride=stride, pad=pad,
                    groups=groups)
        if self.bn:
            y = np_batchnorm(y, self.scales, self.mean, self.variance)
        return np_activate(y + self.biases, activation)


def write_weights(path, params):
    """Writes a Darknet 0.2.5 file (64-bit seen) with the params in order."""
    with open(path, "wb") as handle:
        handle.write(np.array([0, 2, 5], "<i4").tobytes() + np.array([7], "<u8").tobytes())
        for p in params:
            p.payload().astype("<f4").tofile(handle)


# ---------------------------------------------------------------- tests

MINI_CFG = """[net]
width=13
height=13
channels=3

# 0: stride-2 conv on an odd size
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

# 1: depthwise
[convolutional]
batch_normalize=1
groups=8
filters=8
size=3
stride=1
pad=1
activation=relu

# 2
[convolutional]
batch_normalize=1
filters=16
size=1
stride=1
pad=0
activation=mish

# 3: second half of the channels
[route]
layers=-1
groups=2
group_id=1

# 4
[shortcut]
from=-4
activation=linear

# 5: size 2 stride 2 on 7x7 -> 4x4
[maxpool]
size=2
stride=2

# 6
[maxpool]
size=3
stride=1

# 7: depthwise with multiplier 2
[convolutional]
batch_normalize=1
groups=8
filters=16
size=3
stride=1
pad=1
activation=logistic

# 8
[upsample]
stride=2

# 9: 5x5 with pad=1 (padding 2), no batch norm
[convolutional]
filters=4
size=5
stride=1
pad=1
activation=linear

# 10: padding 0, stride 2
[convolutional]
filters=6
size=3
stride=2
pad=0
activation=linear

[yolo]

# 12: relative and absolute references
[route]
layers=-3, 8

[dropout]
probability=.2

# 14
[convolutional]
batch_normalize=1
filters=5
size=1
stride=1
pad=1
activation=mish
"""


def test_generic_model_equals_numpy_darknet(tmp_path):
    """Every layer type of the generic builder, including odd sizes, against numpy."""
    rng = np.random.default_rng(0)
    conv = {0: ConvParams(rng, filters=8, in_channels=3, size=3),
            1: ConvParams(rng, filters=8, in_channels=8, size=3, groups=8),
            2: ConvParams(rng, filters=16, in_channels=8, size=1),
            7: ConvParams(rng, filters=16, in_channels=8, size=3, groups=8),
            9: ConvParams(rng, filters=4, in_channels=16, size=5, bn=False),
            10: ConvParams(rng, filters=6, in_channels=4, size=3, bn=False),
            14: ConvParams(rng, filters=5, in_channels=20, size=1)}
    cfg = tmp_path / "mini.cfg"
    cfg.write_text(MINI_CFG)
    weights = tmp_path / "mini.weights"
    write_weights(weights, [conv[i] for i in sorted(conv)])
    model = build_darknet_model(str(cfg), input_shape=(13, 13, 3))
    report = load_darknet_weights(model, cfg, weights)
    assert report.bytes_left == 0 and report.convolutions == 7

    image = rng.uniform(0, 1, (13, 13, 3))
    out = {}
    out[0] = conv[0].forward(image, stride=2, pad=1, activation="leaky")
    out[1] = conv[1].forward(out[0], stride=1, pad=1, groups=8, activation="relu")
    out[2] = conv[2].forward(out[1], stride=1, pad=0, activation="mish")
    out[3] = out[2][..., 8:]
    out[4] = out[3] + out[0]
    out[5] = np_maxpool(out[4], size=2, stride=2)
    out[6] = np_maxpool(out[5], size=3, stride=1)
    out[7] = conv[7].forward(out[6], stride=1, pad=1, groups=8, activation="logistic")
    out[8] = out[7].repeat(2, axis=0).repeat(2, axis=1)
    out[9] = conv[9].forward(out[8], stride=1, pad=2)
    out[10] = conv[10].forward(out[9], stride=2, pad=0)
    out[11] = out[10]
    out[12] = np.concatenate([out[9], out[8]], axis=-1)
    out[13] = out[12]
    out[14] = conv[14].forward(out[13], stride=1, pad=0, activation="mish")
    assert out[5].shape == (4, 4, 8) and out[10].shape == (3, 3, 6)

    every_layer = build_darknet_model(str(cfg), input_shape=(13, 13, 3), outputs=range(15))
    every_layer.set_weights(model.get_weights())
    results = every_layer(image[None].astype(np.float32))
    for index, result in enumerate(results):
        np.testing.assert_allclose(np.asarray(result)[0], out[index], atol=1e-4, rtol=1e-4,
                                   err_msg=f"layer {index}")
    yolo, last = model(image[None].astype(np.float32))
    np.testing.assert_allclose(np.asarray(yolo)[0], out[10], atol=1e-4)
    np.testing.assert_allclose(np.asarray(last)[0], out[14], atol=1e-4)


@pytest.mark.parametrize("index,stride", [(0, 1), (1, 2)])
def test_backbone_block_equals_numpy_darknet(index, stride):
    """conv_000 (3x3/1) and conv_001 (3x3/2) + BN + Mish of the hand-written backbone.

    Darknet pads size/2 = 1 on every side; the backbone pads top/left only ('valid').
    """
    rng = np.random.default_rng(index)
    in_channels, filters = (3, 32) if index == 0 else (32, 64)
    params = ConvParams(rng, filters=filters, in_channels=in_channels, size=3)
    backbone = build_cspdarknet53(input_shape=(None, None, 3))
    conv = backbone.get_layer(f"conv_{index:03d}")
    conv.kernel.assign(params.weights.transpose(2, 3, 1, 0))
    backbone.get_layer(f"bn_{index:03d}").set_weights(
        [params.scales, params.biases, params.mean, params.variance])
    block = keras_block(backbone, index)
    x = rng.uniform(-1, 1, (10, 10, in_channels))
    expected = params.forward(x, stride=stride, pad=1, activation="mish")
    assert expected.shape == (10 // stride, 10 // stride, filters)
    got = np.asarray(block(x[None].astype(np.float32)))[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def keras_block(backbone, index):
    """The pad (if any), conv, bn and mish layers of one backbone block as a function."""
    names = [f"pad_{index:03d}", f"conv_{index:03d}", f"bn_{index:03d}", f"mish_{index:03d}"]
    layers = [backbone.get_layer(n) for n in names if n in {l.name for l in backbone.layers}]

    def run(x):
        for layer in layers:
            x = layer(x)
        return x
    return run
