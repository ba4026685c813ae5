"""Generic Darknet cfg -> Keras functional model (keras.ops only, any backend).

Layers are named by cfg index like the hand-written backbone (`conv_012`, `bn_012`,
`act_012`, `route_013`, `shortcut_014`, `maxpool_020`, `upsample_030`, `dropout_007`,
`yolo_139`), so `load_darknet_weights` maps `.weights` files onto either model the same way.
"""
import os
from typing import List, Optional, Sequence, Union

import keras

from effdet_tf.darknet.cfg import DarknetCfg, parse_cfg
from effdet_tf.darknet.layers import ChannelGroup, DarknetMaxPool2D
from effdet_tf.darknet.layout import ConvSpec, LayerPlan, maxpool_params, plan_layers
from effdet_tf.errors import DarknetError

BN_EPSILON = 1e-5


def _activation(x, name: str, index: int):
    if name == "linear":
        return x
    layer_name = f"act_{index:03d}"
    if name == "leaky":
        return keras.layers.LeakyReLU(negative_slope=0.1, name=layer_name)(x)
    keras_name = {"mish": "mish", "relu": "relu", "logistic": "sigmoid"}[name]
    return keras.layers.Activation(keras_name, name=layer_name)(x)


def _conv(x, spec: ConvSpec, index: int):
    if spec.stride == 1 and 2 * spec.padding == spec.size - 1:
        padding = "same"
    else:
        if spec.padding:
            pad = (spec.padding, spec.padding)
            x = keras.layers.ZeroPadding2D((pad, pad), name=f"pad_{index:03d}")(x)
        padding = "valid"
    common = {"strides": spec.stride, "padding": padding,
              "use_bias": not spec.batch_normalize, "name": f"conv_{index:03d}"}
    if spec.depthwise:
        layer = keras.layers.DepthwiseConv2D(
            spec.size, depth_multiplier=spec.filters // spec.groups, **common)
    else:
        layer = keras.layers.Conv2D(spec.filters, spec.size, groups=spec.groups, **common)
    x = layer(x)
    if spec.batch_normalize:
        x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99,
                                            name=f"bn_{index:03d}")(x)
    return _activation(x, spec.activation, index)


def _route(tensors: List, plan: LayerPlan):
    groups = plan.section.get_int("groups", 1)
    group_id = plan.section.get_int("group_id", 0)
    parts = [tensors[i] for i in plan.inputs]
    if groups > 1:
        parts = [ChannelGroup(groups, group_id, name=f"route_{plan.index:03d}_{n}")(part)
                 for n, part in enumerate(parts)]
    if len(parts) == 1:
        return parts[0]
    return keras.layers.Concatenate(axis=-1, name=f"route_{plan.index:03d}")(parts)


def _maxpool(x, plan: LayerPlan):
    size, stride, padding = maxpool_params(plan.section)
    name = f"maxpool_{plan.index:03d}"
    if stride == 1 and padding == size - 1:  # Darknet pads (size-1)//2 before: Keras 'same'
        return keras.layers.MaxPooling2D(size, strides=1, padding="same", name=name)(x)
    return DarknetMaxPool2D(size, stride, padding, name=name)(x)


def _shortcut(tensors: List, plan: LayerPlan):
    y = keras.layers.Add(name=f"shortcut_{plan.index:03d}")([tensors[i] for i in plan.inputs])
    return _activation(y, plan.section.get_str("activation", "linear"), plan.index)


def _upsample(x, plan: LayerPlan):
    return keras.layers.UpSampling2D(plan.section.get_int("stride", 2), interpolation="nearest",
                                     name=f"upsample_{plan.index:03d}")(x)


def _dropout(x, plan: LayerPlan):
    # Identity at inference; Darknet's dropout rate for training.
    return keras.layers.Dropout(plan.section.get_float("probability", 0.5),
                                name=f"dropout_{plan.index:03d}")(x)


def _yolo(x, plan: LayerPlan):
    return keras.layers.Identity(name=f"yolo_{plan.index:03d}")(x)


def _avgpool(x, plan: LayerPlan):
    return keras.layers.GlobalAveragePooling2D(keepdims=True,
                                               name=f"avgpool_{plan.index:03d}")(x)


def _softmax(x, plan: LayerPlan):
    return keras.layers.Softmax(axis=-1, name=f"softmax_{plan.index:03d}")(x)


# Layers reading only their default input `x` (the previous layer's output).
_SINGLE_INPUT = {"maxpool": _maxpool, "upsample": _upsample, "dropout": _dropout,
                 "yolo": _yolo, "avgpool": _avgpool, "softmax": _softmax}


def _layer(tensors: List, x, plan: LayerPlan):
    """Returns the output tensor of one planned layer (`x` is its default input)."""
    if plan.type == "convolutional":
        return _conv(x, plan.conv, plan.index)
    if plan.type == "route":
        return _route(tensors, plan)
    if plan.type == "shortcut":
        return _shortcut(tensors, plan)
    if plan.type in _SINGLE_INPUT:
        return _SINGLE_INPUT[plan.type](x, plan)
    raise DarknetError(f"{plan.section.where()}: layer type '{plan.type}' cannot be built")


def build_darknet_model(cfg: Union[DarknetCfg, str, os.PathLike], *,
                        input_shape: Optional[Sequence] = None, upto: Optional[int] = None,
                        outputs: Optional[Sequence[int]] = None,
                        name: Optional[str] = None) -> keras.Model:
    """Builds a Keras functional model equal to a Darknet cfg (inference semantics).

    Args:
        cfg: a parsed cfg or the path of a `.cfg` file.
        input_shape: `(height, width, channels)`; `(None, None, [net] channels)` when None.
        upto: build only the layers `0 .. upto - 1` (all when None).
        outputs: cfg indices of the layers to output; by default every layer no later layer
            reads (the `[yolo]` layers, which output their raw input, for detectors).
        name: model name; the cfg file's stem when None.

    Returns:
        A model whose outputs are a list in the order of `outputs`.

    Raises:
        DarknetError: the cfg is malformed or uses an unsupported layer or option, or an
            output index is outside the built layers.
    """
    if not isinstance(cfg, DarknetCfg):
        cfg = parse_cfg(cfg)
    if input_shape is None:
        input_shape = (None, None, cfg.input_shape[2])
    plans = plan_layers(cfg, input_shape=tuple(input_shape), upto=upto)
    if outputs is None:
        consumed = {i for plan in plans for i in plan.inputs}
        outputs = [plan.index for plan in plans if plan.index not in consumed]
    for index in outputs:
        if not 0 <= index < len(plans):
            raise DarknetError(f"{cfg.path}: output layer {index} is outside the built "
                               f"layers 0..{len(plans) - 1}")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    tensors: List = []
    for plan in plans:
        x = tensors[plan.inputs[0]] if plan.inputs else inputs
        tensors.append(_layer(tensors, x, plan))
    stem = os.path.splitext(os.path.basename(cfg.path))[0]
    return keras.Model(inputs, [tensors[i] for i in outputs],
                       name=name or "".join(ch if ch.isalnum() else "_" for ch in stem))
