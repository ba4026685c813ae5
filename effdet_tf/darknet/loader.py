"""Puts Darknet `.weights` into a Keras model by cfg index (`conv_NNN`, `bn_NNN`).

Per convolution the file holds: biases (the BN beta when `batch_normalize=1`), then with BN
the scales (gamma), rolling mean and rolling variance, then the kernel as
`[out, in / groups, k, k]`, which becomes Keras' `[k, k, in / groups, out]` by
`transpose(2, 3, 1, 0)` (`DepthwiseConv2D`: `[k, k, in, multiplier]`).

Every layer is checked against the model before any value is assigned, so a mismatch leaves
the model untouched.
"""
import dataclasses
import os
import re
from typing import Dict, List, Optional, Tuple, Union

import keras
import numpy as np

from effdet_tf.darknet.cfg import Section, parse_cfg
from effdet_tf.darknet.layout import ConvSpec, LayerPlan, plan_layers, total_floats
from effdet_tf.darknet.weights import WeightsHeader, expect_size, read_floats, read_header
from effdet_tf.errors import DarknetError

PathLike = Union[str, os.PathLike]
_CONV_NAME = re.compile(r"^conv_(\d{3,})$")


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What `load_darknet_weights` read.

    Attributes:
        weights_path: the `.weights` file.
        cfg_path: the cfg file.
        header: the file's header.
        layers: cfg layers covered (`upto`, or all).
        convolutions: convolutions loaded.
        bytes_read: header plus the values read.
        bytes_left: bytes after the last value read (0 for a whole cfg).
        file_size: size of the file in bytes.
        unloaded: model `conv_NNN` layers the cfg range did not cover.
    """

    weights_path: str
    cfg_path: str
    header: WeightsHeader
    layers: int
    convolutions: int
    bytes_read: int
    bytes_left: int
    file_size: int
    unloaded: Tuple[str, ...] = ()

    def __str__(self) -> str:
        text = (f"{self.weights_path}: {self.header}; layers 0..{self.layers - 1} of "
                f"{self.cfg_path}: {self.convolutions} convolutions, read {self.bytes_read:,} "
                f"of {self.file_size:,} bytes, {self.bytes_left:,} bytes left unread")
        if self.unloaded:
            text += f"; model layers not loaded: {', '.join(self.unloaded)}"
        return text


def model_layers(model: keras.Model) -> Dict[str, keras.layers.Layer]:
    """Returns `name -> layer` over a model and its nested models.

    Args:
        model: a Keras model (e.g. a detector holding the backbone as a sub-model).

    Returns:
        The layers by name (the first of equal names wins).
    """
    found: Dict[str, keras.layers.Layer] = {}
    stack = list(reversed(model.layers))
    while stack:
        layer = stack.pop()
        found.setdefault(layer.name, layer)
        stack.extend(reversed(getattr(layer, "layers", [])))
    return found


def _expected_kernel(plan: LayerPlan) -> Tuple[int, ...]:
    spec = plan.conv
    if spec.depthwise:
        return (spec.size, spec.size, spec.in_channels, spec.filters // spec.groups)
    return (spec.size, spec.size, spec.in_channels // spec.groups, spec.filters)


def _check_layer(plan: LayerPlan, layers: Dict[str, keras.layers.Layer], cfg_path: str):
    """Returns `(conv layer, bn layer or None)` after checking they match the cfg."""
    spec, index = plan.conv, plan.index
    where = f"{cfg_path}: layer {index}"
    if plan.section.line:
        where += f" ([convolutional] at line {plan.section.line})"
    conv = layers.get(f"conv_{index:03d}")
    if conv is None or getattr(conv, "kernel", None) is None:
        raise DarknetError(f"{where}: the model has no convolution named conv_{index:03d}")
    expected = _expected_kernel(plan)
    is_depthwise = hasattr(conv, "depth_multiplier")
    if tuple(conv.kernel.shape) != expected or is_depthwise != spec.depthwise:
        kind = "depthwise" if spec.depthwise else "regular"
        raise DarknetError(
            f"{where}: cfg implies a {kind} kernel {expected} (filters={spec.filters}, "
            f"size={spec.size}, groups={spec.groups}, {spec.in_channels} input channels), "
            f"model layer {conv.name} ({type(conv).__name__}) has {tuple(conv.kernel.shape)}")
    has_bias = getattr(conv, "bias", None) is not None
    bn = layers.get(f"bn_{index:03d}")
    if spec.batch_normalize:
        if has_bias:
            raise DarknetError(f"{where}: batch_normalize=1 but {conv.name} has a bias")
        if bn is None or getattr(bn, "gamma", None) is None or getattr(bn, "beta", None) is None:
            raise DarknetError(f"{where}: batch_normalize=1 but the model has no "
                               f"bn_{index:03d} with scale and center")
        if tuple(bn.gamma.shape) != (spec.filters,):
            raise DarknetError(f"{where}: bn_{index:03d} has {bn.gamma.shape[0]} channels, "
                               f"the cfg {spec.filters}")
        return conv, bn
    if not has_bias:
        raise DarknetError(f"{where}: no batch_normalize, so {conv.name} needs a bias")
    if bn is not None:
        raise DarknetError(f"{where}: no batch_normalize, but the model has {bn.name}")
    return conv, None


def _assign(plan: LayerPlan, values: np.ndarray, conv, bn) -> None:
    spec = plan.conv
    filters = spec.filters
    biases = values[:filters]
    start = filters
    if bn is not None:
        scales, mean, variance = (values[start + n * filters:start + (n + 1) * filters]
                                  for n in range(3))
        start += 3 * filters
        bn.gamma.assign(scales)
        bn.beta.assign(biases)
        bn.moving_mean.assign(mean)
        bn.moving_variance.assign(variance)
    else:
        conv.bias.assign(biases)
    kernel = values[start:start + spec.kernel_floats]
    if spec.depthwise:
        multiplier = filters // spec.groups
        kernel = kernel.reshape(spec.in_channels, multiplier, spec.size, spec.size)
        kernel = kernel.transpose(2, 3, 0, 1)
    else:
        kernel = kernel.reshape(filters, spec.in_channels // spec.groups, spec.size, spec.size)
        kernel = kernel.transpose(2, 3, 1, 0)
    conv.kernel.assign(np.ascontiguousarray(kernel))


def plans_from_model(model: keras.Model, upto: Optional[int] = None) -> List[LayerPlan]:
    """Derives the weights layout from a model's `conv_NNN` / `bn_NNN` layers (no cfg).

    Darknet stores convolutions in index order; each takes `4 * filters` values with a batch
    norm (`filters` biases without) plus its kernel. Only sizes can be checked this way.

    Args:
        model: a model whose convolutions are named by cfg index.
        upto: only convolutions with index < upto.

    Returns:
        One plan per convolution, offsets counted in floats after the header.

    Raises:
        DarknetError: the model has no `conv_NNN` layer below `upto`.
    """
    layers = model_layers(model)
    plans: List[LayerPlan] = []
    offset = 0
    for index in conv_indices(model):
        if upto is not None and index >= upto:
            break
        conv = layers[f"conv_{index:03d}"]
        size, _, per_group, out = conv.kernel.shape
        depthwise = hasattr(conv, "depth_multiplier")
        groups = per_group if depthwise else getattr(conv, "groups", 1)
        in_channels = per_group if depthwise else per_group * groups
        filters = per_group * out if depthwise else out
        spec = ConvSpec(filters=filters, size=size, stride=1, padding=0,
                        groups=in_channels if depthwise else groups,
                        batch_normalize=f"bn_{index:03d}" in layers, activation="linear",
                        in_channels=in_channels)
        section = Section("convolutional", 0, {}, index=index, path=f"model {model.name}")
        plans.append(LayerPlan(section=section, inputs=[], shape=(None, None, filters),
                               conv=spec, offset=offset))
        offset += spec.num_floats
    if not plans:
        raise DarknetError(f"model {model.name} has no conv_NNN layers to load weights into")
    return plans


def load_darknet_weights(model: keras.Model, cfg_path: Optional[PathLike],
                         weights_path: PathLike, *, upto: Optional[int] = None,
                         progress: bool = False) -> LoadReport:
    """Loads a Darknet `.weights` file into a model whose layers carry cfg indices.

    Works for the generic model (`build_darknet_model`) and for the hand-written
    `build_cspdarknet53` (with yolov4.cfg and `upto=105`).

    Args:
        model: the Keras model (nested models are searched too).
        cfg_path: the cfg the weights were trained with. None derives the layout from the
            model's own `conv_NNN`/`bn_NNN` layers (`plans_from_model`): then only sizes are
            checked and the file may be longer than the model needs.
        weights_path: the `.weights` file.
        upto: read only the layers `0 .. upto - 1` and leave the rest of the file unread;
            None reads the whole cfg and requires the file to end exactly there.
        progress: show a progress bar (tqdm, on stderr).

    Returns:
        A `LoadReport` with the header and the byte accounting.

    Raises:
        DarknetError: malformed cfg or header; a file shorter than the layers need (or longer,
            without `upto`), naming both byte counts; or a model that does not match the cfg.
    """
    if cfg_path is None:
        plans = plans_from_model(model, upto)
        source = f"model {model.name}"
        num_layers = plans[-1].index + 1
    else:
        cfg = parse_cfg(cfg_path)
        all_plans = plan_layers(cfg, upto=upto)
        plans = [p for p in all_plans if p.conv is not None]
        source, num_layers = cfg.path, len(all_plans)
    header = read_header(weights_path)
    num_floats = total_floats(plans)
    bytes_left = expect_size(weights_path, header, num_floats,
                             exact=upto is None and cfg_path is not None, cfg_path=cfg_path)
    layers = model_layers(model)
    checked = [(plan, *_check_layer(plan, layers, source)) for plan in plans]
    values = read_floats(weights_path, header, num_floats)
    if progress:
        from tqdm import tqdm  # pylint: disable=import-outside-toplevel  # CLI-only dependency
        checked = tqdm(checked, desc="loading", unit="conv", leave=False)
    for plan, conv, bn in checked:
        _assign(plan, values[plan.offset:plan.offset + plan.num_floats], conv, bn)
    loaded = {f"conv_{plan.index:03d}" for plan in plans}
    unloaded = tuple(sorted(name for name in layers
                            if _CONV_NAME.match(name) and name not in loaded))
    return LoadReport(weights_path=os.fspath(weights_path), cfg_path=source, header=header,
                      layers=num_layers, convolutions=len(plans),
                      bytes_read=header.size + 4 * num_floats, bytes_left=bytes_left,
                      file_size=os.path.getsize(weights_path), unloaded=unloaded)


def conv_indices(model: keras.Model) -> List[int]:
    """Returns the sorted cfg indices of the model's `conv_NNN` layers.

    Args:
        model: a Keras model.

    Returns:
        The indices.
    """
    return sorted(int(m.group(1)) for m in map(_CONV_NAME.match, model_layers(model)) if m)


def load_backbone_weights(model: keras.Model, path: PathLike,
                          cfg_path: Optional[PathLike] = None) -> Optional[LoadReport]:
    """Initialises a backbone from converted Keras weights or from a Darknet file.

    Args:
        model: the backbone (e.g. `build_cspdarknet53()`).
        path: a `.weights.h5` written by `python -m effdet_tf.darknet convert` (loaded with
            `model.load_weights`), or a Darknet `.weights` file (e.g. yolov4.weights or
            yolov4.conv.137), read up to the model's last `conv_NNN` layer.
        cfg_path: the cfg of a Darknet file (e.g. yolov4.cfg), to check every layer against
            it; when None the layout comes from the model's `conv_NNN`/`bn_NNN` layers
            (right for CSPDarknet53 and any yolov4-family file, but only sizes are checked).

    Returns:
        The `LoadReport` for a Darknet file, None for Keras weights.

    Raises:
        DarknetError: unreadable or mismatching file.
    """
    name = os.fspath(path)
    if name.endswith(".h5") or name.endswith(".keras"):
        if not os.path.isfile(name):
            raise DarknetError(f"backbone weights {name} do not exist")
        try:
            model.load_weights(name)
        except (ValueError, KeyError, OSError) as err:
            raise DarknetError(f"{name}: cannot load into model {model.name}: {err}") from None
        return None
    indices = conv_indices(model)
    if not indices:
        raise DarknetError(f"model {model.name} has no conv_NNN layers to load {name} into")
    return load_darknet_weights(model, cfg_path, name, upto=indices[-1] + 1)
