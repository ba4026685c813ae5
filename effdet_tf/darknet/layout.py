"""Shapes and `.weights` layout of a parsed cfg, computed with Darknet's own formulas.

`plan_layers` walks the layers like Darknet's `parse_network_cfg`: it resolves route and
shortcut indices, infers each layer's output shape, and gives every convolution its place in
the weights file (float offset after the header and float count). The loader, the builder and
`inspect` all use this one plan.
"""
import dataclasses
from typing import List, Optional, Tuple

from effdet_tf.darknet.cfg import DarknetCfg, Section
from effdet_tf.errors import DarknetError

ACTIVATIONS = ("linear", "leaky", "mish", "relu", "logistic")

# Convolution options this package does not implement, with their no-op value.
_UNSUPPORTED_CONV = {"dilation": 1, "antialiasing": 0, "binary": 0, "xnor": 0,
                     "share_index": -1000000, "deform": 0}

Shape = Tuple[Optional[int], Optional[int], int]


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """A `[convolutional]` layer as Darknet sees it.

    Attributes:
        filters: output channels.
        size: square kernel size.
        stride: stride (both axes).
        padding: zero padding on each side (`size // 2` when `pad=1`).
        groups: channel groups (`groups == in_channels == filters` is depthwise).
        batch_normalize: whether a batch norm follows (then the conv has no bias).
        activation: Darknet activation name.
        in_channels: input channels.
    """

    filters: int
    size: int
    stride: int
    padding: int
    groups: int
    batch_normalize: bool
    activation: str
    in_channels: int

    @property
    def kernel_floats(self) -> int:
        """Number of kernel values: `filters * in_channels / groups * size * size`."""
        return self.filters * (self.in_channels // self.groups) * self.size * self.size

    @property
    def num_floats(self) -> int:
        """Values this layer takes from the file: biases, BN (scales, mean, var), kernel."""
        per_filter = 4 if self.batch_normalize else 1
        return per_filter * self.filters + self.kernel_floats

    @property
    def depthwise(self) -> bool:
        """True for one group per input channel (Keras `DepthwiseConv2D`)."""
        return self.groups > 1 and self.groups == self.in_channels


@dataclasses.dataclass
class LayerPlan:
    """One cfg layer with its resolved inputs, output shape and weights slice.

    Attributes:
        section: the cfg section.
        inputs: indices of the layers it reads (`[index - 1]` for most layers).
        shape: output `(height, width, channels)`; sizes are `None` when the input is.
        conv: the convolution spec, for `[convolutional]` layers.
        offset: float offset of its weights after the header (convolutions only).
    """

    section: Section
    inputs: List[int]
    shape: Shape
    conv: Optional[ConvSpec] = None
    offset: int = 0

    @property
    def index(self) -> int:
        """The cfg layer index."""
        return self.section.index

    @property
    def type(self) -> str:
        """The canonical layer type."""
        return self.section.type

    @property
    def num_floats(self) -> int:
        """Values this layer takes from the weights file."""
        return self.conv.num_floats if self.conv else 0


def _out_size(size: Optional[int], formula) -> Optional[int]:
    return None if size is None else formula(size)


def _activation(section: Section, default: str) -> str:
    name = section.get_str("activation", default)
    if name not in ACTIVATIONS:
        raise DarknetError(f"{section.where()}: unsupported activation '{name}' "
                           f"(supported: {', '.join(ACTIVATIONS)})")
    return name


def _plan_conv(section: Section, shape: Shape) -> Tuple[ConvSpec, Shape]:
    for key, neutral in _UNSUPPORTED_CONV.items():
        if section.get_int(key, neutral) != neutral:
            raise DarknetError(f"{section.where()}: option '{key}' is not supported")
    stride = section.get_int("stride", 1)
    if (section.get_int("stride_x", stride), section.get_int("stride_y", stride)) != (
            stride, stride):
        raise DarknetError(f"{section.where()}: different stride_x/stride_y are not supported")
    size = section.get_int("size", 1)
    padding = size // 2 if section.get_int("pad", 0) else section.get_int("padding", 0)
    spec = ConvSpec(filters=section.get_int("filters", 1), size=size, stride=stride,
                    padding=padding, groups=section.get_int("groups", 1),
                    batch_normalize=bool(section.get_int("batch_normalize", 0)),
                    activation=_activation(section, "logistic"), in_channels=shape[2])
    if min(spec.filters, spec.size, spec.stride, spec.groups) < 1 or padding < 0:
        raise DarknetError(f"{section.where()}: filters, size, stride and groups must be >= 1")
    if spec.in_channels % spec.groups or spec.filters % spec.groups:
        raise DarknetError(f"{section.where()}: groups={spec.groups} does not divide the "
                           f"{spec.in_channels} input channels and {spec.filters} filters")

    def out(n):
        return (n + 2 * padding - size) // stride + 1

    return spec, (_out_size(shape[0], out), _out_size(shape[1], out), spec.filters)


def _resolve(section: Section, raw: int) -> int:
    index = raw + section.index if raw < 0 else raw
    if not 0 <= index < section.index:
        raise DarknetError(f"{section.where()}: layer reference {raw} points to layer {index}, "
                           f"outside 0..{section.index - 1}")
    return index


def _plan_route(section: Section, shapes: List[Shape]) -> Tuple[List[int], Shape]:
    inputs = [_resolve(section, raw) for raw in section.get_ints("layers")]
    groups = section.get_int("groups", 1)
    group_id = section.get_int("group_id", 0)
    if groups < 1 or not 0 <= group_id < groups:
        raise DarknetError(f"{section.where()}: need groups >= 1 and 0 <= group_id < groups")
    channels = 0
    for i in inputs:
        if shapes[i][2] % groups:
            raise DarknetError(f"{section.where()}: layer {i} has {shapes[i][2]} channels, "
                               f"not divisible by groups={groups}")
        if shapes[i][:2] != shapes[inputs[0]][:2]:
            raise DarknetError(f"{section.where()}: layers {inputs[0]} and {i} differ in size "
                               f"({shapes[inputs[0]][:2]} vs {shapes[i][:2]})")
        channels += shapes[i][2] // groups
    return inputs, (shapes[inputs[0]][0], shapes[inputs[0]][1], channels)


def _plan_shortcut(section: Section, shapes: List[Shape]) -> Tuple[List[int], Shape]:
    if section.get_str("weights_type", "none") != "none":
        raise DarknetError(f"{section.where()}: weighted shortcuts are not supported")
    _activation(section, "linear")
    inputs = [section.index - 1] + [_resolve(section, raw) for raw in section.get_ints("from")]
    for i in inputs[1:]:
        if shapes[i] != shapes[inputs[0]]:
            raise DarknetError(f"{section.where()}: layer {i} has shape {shapes[i]}, the "
                               f"previous layer {shapes[inputs[0]]}; they must be equal")
    return inputs, shapes[inputs[0]]


def maxpool_params(section: Section) -> Tuple[int, int, int]:
    """Returns Darknet's `(size, stride, padding)` of a `[maxpool]` (padding = total, both sides).

    Args:
        section: the `[maxpool]` section.

    Returns:
        `(size, stride, padding)` with Darknet's defaults (`size = stride`,
        `padding = size - 1`).

    Raises:
        DarknetError: unsupported options (`stride_x`/`stride_y`, `maxpool_depth`).
    """
    stride = section.get_int("stride", 1)
    size = section.get_int("size", stride)
    padding = section.get_int("padding", size - 1)
    if section.get_int("maxpool_depth", 0) or section.get_int("antialiasing", 0) or (
            section.get_int("stride_x", stride), section.get_int("stride_y", stride)) != (
                stride, stride):
        raise DarknetError(f"{section.where()}: maxpool_depth, antialiasing and different "
                           "stride_x/stride_y are not supported")
    if size < 1 or stride < 1 or padding < 0:
        raise DarknetError(f"{section.where()}: need size >= 1, stride >= 1, padding >= 0")
    return size, stride, padding


def _plan_simple(section: Section, shape: Shape) -> Shape:
    kind = section.type
    if kind == "maxpool":
        size, stride, padding = maxpool_params(section)

        def out(n):
            return (n + padding - size) // stride + 1

        return _out_size(shape[0], out), _out_size(shape[1], out), shape[2]
    if kind == "upsample":
        stride = section.get_int("stride", 2)
        if stride < 1 or section.get_float("scale", 1.0) != 1.0:
            raise DarknetError(f"{section.where()}: only stride >= 1 and scale=1 are supported")
        return _out_size(shape[0], lambda n: n * stride), _out_size(
            shape[1], lambda n: n * stride), shape[2]
    if kind == "avgpool":
        return 1, 1, shape[2]
    if kind == "softmax" and section.get_int("groups", 1) != 1:
        raise DarknetError(f"{section.where()}: only softmax groups=1 is supported")
    return shape  # dropout, yolo, softmax keep the shape


def plan_layers(cfg: DarknetCfg, *, input_shape: Optional[Tuple] = None,
                upto: Optional[int] = None) -> List[LayerPlan]:
    """Plans the layers `0 .. upto - 1` (all when `upto` is None) of a cfg.

    Args:
        cfg: the parsed cfg.
        input_shape: `(height, width, channels)`; `[net]`'s size when None. Sizes may be
            None (unknown); the channels must be known.
        upto: number of layers to plan.

    Returns:
        One `LayerPlan` per layer, weights offsets counted in floats after the header.

    Raises:
        DarknetError: `upto` out of range, a reference to a later layer, mismatched shapes,
            or an unsupported option; the message names the file, section and line.
    """
    count = len(cfg.layers) if upto is None else upto
    if not 1 <= count <= len(cfg.layers):
        raise DarknetError(f"{cfg.path}: upto={upto} is outside 1..{len(cfg.layers)} "
                           f"(the cfg has {len(cfg.layers)} layers)")
    height, width, channels = input_shape if input_shape is not None else cfg.input_shape
    shape: Shape = (height or None, width or None, channels)
    if channels < 1:
        raise DarknetError(f"{cfg.path}: [net] channels must be >= 1")
    plans: List[LayerPlan] = []
    shapes: List[Shape] = []
    offset = 0
    for section in cfg.layers[:count]:
        previous = shapes[-1] if shapes else shape
        inputs = [section.index - 1] if shapes else []
        plan = LayerPlan(section=section, inputs=inputs, shape=previous)
        if section.type == "convolutional":
            plan.conv, plan.shape = _plan_conv(section, previous)
            plan.offset = offset
            offset += plan.conv.num_floats
        elif not shapes and section.type in ("route", "shortcut"):
            raise DarknetError(f"{section.where()}: the first layer cannot be a {section.type}")
        elif section.type == "route":
            plan.inputs, plan.shape = _plan_route(section, shapes)
        elif section.type == "shortcut":
            plan.inputs, plan.shape = _plan_shortcut(section, shapes)
        else:
            plan.shape = _plan_simple(section, previous)
        if any(n is not None and n < 1 for n in plan.shape[:2]):
            raise DarknetError(f"{section.where()}: output size {plan.shape[:2]} is empty; "
                               "the input is too small")
        plans.append(plan)
        shapes.append(plan.shape)
    return plans


def total_floats(plans: List[LayerPlan]) -> int:
    """Returns the number of float32 values the planned layers read from a weights file.

    Args:
        plans: output of `plan_layers`.

    Returns:
        The sum of the convolutions' value counts.
    """
    return sum(plan.num_floats for plan in plans)
