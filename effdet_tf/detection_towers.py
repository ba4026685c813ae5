"""The class and box towers of detection heads, per head or shared by all of them.

A detection head (`effdet_tf.detection_head.DetectionHead`) is two towers (class and
box: `num_layers` x separable conv -> norm per level -> swish) and two prediction convs.
Per head (`model.detection_towers: per_head`), each head owns all four, so a head learns
its towers and its boxes only from the images of its own datasets. Shared
(`model.detection_towers: shared`), every detection head runs the same class tower, the
same box tower and the same box prediction conv; only the class prediction conv (the
head's own classes) is its own. The boxes are then learned from every detection
dataset's images, as in one detector trained on the merged datasets, while each head
still scores only its own classes.
"""
import dataclasses
from typing import List, Optional

import keras

from effdet_tf import anchors as anchor_lib
from effdet_tf.errors import ConfigError
from effdet_tf.layers import head_norm, separable_conv

TOWER_MODES = ("per_head", "shared")
# The name prefix of shared tower layers (per-head ones take the head's name).
SHARED_PREFIX = "detection"


@dataclasses.dataclass
class DetectionTowers:
    """The layers of a class tower, a box tower and a box prediction conv.

    Attributes:
        channels: width of every tower layer.
        num_layers: layers per tower.
        norm: `"batch"` or `"group"` (`effdet_tf.layers.head_norm`), one per layer and
            level.
        anchors_per_location: anchors the box prediction conv predicts at each location.
        class_convs: the class tower's convs, shared across levels.
        class_norms: its norms, `num_layers x levels`, layer-major.
        box_convs: the box tower's convs.
        box_norms: its norms, as `class_norms`.
        box_predict: the conv to `anchors_per_location * 4` box deltas.
        shared: whether every detection head of the model runs these layers.
    """

    channels: int
    num_layers: int
    norm: str
    anchors_per_location: int
    class_convs: List[keras.layers.Layer]
    class_norms: List[keras.layers.Layer]
    box_convs: List[keras.layers.Layer]
    box_norms: List[keras.layers.Layer]
    box_predict: keras.layers.Layer
    shared: bool = False

    def check_fits(self, head: str, *, channels: int, num_layers: int, norm: str,
                   anchors_per_location: int) -> None:
        """Raises ConfigError when a head's settings differ from these shared towers'.

        Args:
            head: the head's name, for the message.
            channels: the head's tower width.
            num_layers: its layers per tower.
            norm: its tower normalisation.
            anchors_per_location: its anchors per location.

        Raises:
            ConfigError: a setting differs; the message names it and both values.
        """
        wanted = {"channels": channels, "num_layers": num_layers, "norm": norm,
                  "anchors per location": anchors_per_location}
        have = {"channels": self.channels, "num_layers": self.num_layers,
                "norm": self.norm, "anchors per location": self.anchors_per_location}
        for key, value in wanted.items():
            if value != have[key]:
                raise ConfigError(
                    f"head {head!r}: {key} {value} differs from the shared detection "
                    f"towers' {have[key]}; give every detection head the same settings "
                    "(options, aspect_ratios) or set model.detection_towers=per_head")


def build_towers(prefix: str, *, channels: int, num_layers: int, norm: str,
                 anchors_per_location: int, shared: bool = False) -> DetectionTowers:
    """Builds the tower layers (unbuilt: their weights appear on the first call).

    Args:
        prefix: layer name prefix: the head's name, or `SHARED_PREFIX`.
        channels: tower width.
        num_layers: layers per tower.
        norm: `"batch"` or `"group"`.
        anchors_per_location: anchors per location of the box prediction.
        shared: for every detection head of the model.

    Returns:
        The towers.

    Raises:
        ConfigError: unknown norm.

    Example:
        >>> towers = build_towers("detection", channels=64, num_layers=3, norm="group",
        ...                       anchors_per_location=9)
    """
    levels = range(anchor_lib.MIN_LEVEL, anchor_lib.MAX_LEVEL + 1)
    tag = "bn" if norm == "batch" else "gn"

    def norms(net: str) -> List[keras.layers.Layer]:
        return [head_norm(norm, channels, f"{prefix}_{net}_{tag}{i}_p{level}")
                for i in range(num_layers) for level in levels]

    return DetectionTowers(
        channels=channels, num_layers=num_layers, norm=norm,
        anchors_per_location=anchors_per_location, shared=shared,
        class_convs=[separable_conv(channels, f"{prefix}_class_conv{i}")
                     for i in range(num_layers)],
        class_norms=norms("class"),
        box_convs=[separable_conv(channels, f"{prefix}_box_conv{i}")
                   for i in range(num_layers)],
        box_norms=norms("box"),
        box_predict=separable_conv(anchors_per_location * 4, f"{prefix}_box_predict",
                                   dtype="float32"))


def check_tower_mode(mode: str) -> str:
    """Returns `mode` when it is one of `TOWER_MODES`.

    Raises:
        ConfigError: any other value.
    """
    if mode not in TOWER_MODES:
        raise ConfigError(f"detection_towers must be one of {TOWER_MODES}, got {mode!r}")
    return mode


def shared_towers(mode: str, *, channels: int, num_layers: int, norm: str,
                  aspect_ratios: Optional[List[float]]) -> Optional[DetectionTowers]:
    """The towers every detection head shares in mode `"shared"`; None per head.

    Args:
        mode: `"per_head"` or `"shared"`.
        channels: tower width.
        num_layers: layers per tower.
        norm: tower normalisation.
        aspect_ratios: the model's anchor aspect ratios (None: EfficientDet's).

    Returns:
        The shared towers, or None.

    Raises:
        ConfigError: unknown mode or norm, or bad aspect ratios.
    """
    if check_tower_mode(mode) == "per_head":
        return None
    ratios = anchor_lib.check_aspect_ratios(
        anchor_lib.ASPECT_RATIOS if aspect_ratios is None else aspect_ratios,
        "model.anchor_aspect_ratios")
    return build_towers(SHARED_PREFIX, channels=channels, num_layers=num_layers, norm=norm,
                        anchors_per_location=anchor_lib.NUM_SCALES * len(ratios),
                        shared=True)
