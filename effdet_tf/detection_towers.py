"""The class and box towers of detection heads, per head or shared by all of them.

A detection head (`effdet_tf.detection_head.DetectionHead`) is two towers (class and
box: `num_layers` x separable conv -> norm per level -> swish) and two prediction convs.
Per head (`model.detection_towers: per_head`), each head owns all four, so a head learns
its towers and its boxes only from the images of its own datasets. Shared
(`model.detection_towers: shared`), every detection head runs the same class tower, the
same box tower and the same box prediction conv (heads whose options change the towers
or the anchors share theirs with the heads like them: `TowerPool`); only the class
prediction conv (the head's own classes) is its own. The boxes are then learned from
every detection dataset's images, as in one detector trained on the merged datasets,
while each head still scores only its own classes.
"""
import dataclasses
from typing import Dict, List, Optional, Tuple

import keras

from effdet_tf import anchors as anchor_lib
from effdet_tf.errors import ConfigError
from effdet_tf.layers import head_norm, separable_conv

TOWER_MODES = ("per_head", "shared")
# The name prefix of shared tower layers (per-head ones take the head's name).
SHARED_PREFIX = "detection"


@dataclasses.dataclass
class DetectionTowers:
    """The layers of a class tower and a box tower, and the box prediction conv if shared.

    Attributes:
        channels: width of every tower layer.
        class_convs: the class tower's convs, shared across levels.
        box_convs: the box tower's convs.
        class_norms: the class tower's norms, `num_layers x levels`, layer-major.
        box_norms: the box tower's norms, as `class_norms`.
        box_predict: the conv to box deltas when the towers are shared (a head with towers
            of its own builds its own after its class prediction conv, the order its
            weights were always drawn in); None otherwise.
        prefix: the layers' name prefix.
    """

    channels: int
    class_convs: List[keras.layers.Layer]
    box_convs: List[keras.layers.Layer]
    class_norms: List[keras.layers.Layer]
    box_norms: List[keras.layers.Layer]
    box_predict: Optional[keras.layers.Layer] = None
    prefix: str = ""

    def build(self) -> None:
        """Creates every weight now, outside any head, so their paths (`var.path`, which
        export's weight copy matches) name the towers and not the head that ran them first."""
        shape = (None, None, None, self.channels)
        for layer in (self.class_convs + self.box_convs + self.class_norms + self.box_norms
                      + ([self.box_predict] if self.box_predict is not None else [])):
            layer.build(shape)


def build_towers(prefix: str, *, channels: int, num_layers: int, norm: str) -> DetectionTowers:
    """Builds a class and a box tower's layers (unbuilt: their weights appear on first use).

    Args:
        prefix: layer name prefix: the head's name, or the shared towers' name.
        channels: tower width.
        num_layers: layers per tower.
        norm: `"batch"` or `"group"`.

    Returns:
        The towers, without a box prediction conv.

    Raises:
        ConfigError: unknown norm.

    Example:
        >>> towers = build_towers("fruits", channels=64, num_layers=3, norm="group")
    """
    levels = range(anchor_lib.MIN_LEVEL, anchor_lib.MAX_LEVEL + 1)
    tag = "bn" if norm == "batch" else "gn"

    def convs(net: str) -> List[keras.layers.Layer]:
        return [separable_conv(channels, f"{prefix}_{net}_conv{i}") for i in range(num_layers)]

    def norms(net: str) -> List[keras.layers.Layer]:
        return [head_norm(norm, channels, f"{prefix}_{net}_{tag}{i}_p{level}")
                for i in range(num_layers) for level in levels]

    # Class convs, box convs, then the norms: the order the weights were always drawn in.
    class_convs, box_convs = convs("class"), convs("box")
    return DetectionTowers(channels=channels, class_convs=class_convs, box_convs=box_convs,
                           class_norms=norms("class"), box_norms=norms("box"), prefix=prefix)


def box_predict_conv(prefix: str, anchors_per_location: int) -> keras.layers.Layer:
    """The conv from the box tower to `anchors_per_location * 4` deltas, in float32."""
    return separable_conv(anchors_per_location * 4, f"{prefix}_box_predict", dtype="float32")


class TowerPool:
    """The shared towers of a model's detection heads (`model.detection_towers: shared`).

    Every detection head asks the pool for towers that fit its settings: heads that agree
    on width, layers, norm and anchors per location (all of them, unless a head's options
    change one) get the same towers; a head that differs gets towers of its own kind,
    shared with the heads like it.

    Example:
        >>> pool = TowerPool()
        >>> a = pool.towers_for(channels=64, num_layers=3, norm="group", anchors_per_location=9)
        >>> a is pool.towers_for(channels=64, num_layers=3, norm="group", anchors_per_location=9)
        True
    """

    def __init__(self) -> None:
        self._towers: Dict[Tuple[int, int, str, int], DetectionTowers] = {}

    def towers_for(self, *, channels: int, num_layers: int, norm: str,
                   anchors_per_location: int) -> DetectionTowers:
        """The built towers for these settings, made on the first request.

        Args:
            channels: tower width.
            num_layers: layers per tower.
            norm: tower normalisation.
            anchors_per_location: anchors per location of the box prediction.

        Returns:
            The towers, with their box prediction conv.

        Raises:
            ConfigError: unknown norm.
        """
        key = (channels, num_layers, norm, anchors_per_location)
        if key not in self._towers:
            index = len(self._towers)
            prefix = SHARED_PREFIX if index == 0 else f"{SHARED_PREFIX}{index + 1}"
            towers = build_towers(prefix, channels=channels, num_layers=num_layers, norm=norm)
            towers.box_predict = box_predict_conv(prefix, anchors_per_location)
            towers.build()
            self._towers[key] = towers
        return self._towers[key]


def check_tower_mode(mode: str) -> str:
    """Returns `mode` when it is one of `TOWER_MODES`.

    Raises:
        ConfigError: any other value.
    """
    if mode not in TOWER_MODES:
        raise ConfigError(f"detection_towers must be one of {TOWER_MODES}, got {mode!r}")
    return mode


def tower_pool(mode: str) -> Optional[TowerPool]:
    """A pool for mode `"shared"`; None for `"per_head"` (each head builds its own).

    Raises:
        ConfigError: unknown mode.
    """
    return TowerPool() if check_tower_mode(mode) == "shared" else None
