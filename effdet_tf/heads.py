"""Task heads on the BiFPN pyramid: the `TaskHead` contract, `HeadSpec`, and building a
head of a registered kind.

A head is a Keras layer that maps the pyramid `[P3, ..., P7]` to a dict of float32
tensors and owns everything about its task: the batch keys it reads (`target_keys`), its
loss under a per-example mask, its post-processing (keras.ops), the outputs it adds to an
export, and a random valid target batch for the contract tests. The detector only calls
`head(features)`, `head.compute_loss(...)` and reads `head.loss_components`.

A new kind is one new file with a `TaskHead` subclass (see `detection_head.py`),
registered by one line in `effdet_tf.names.HEAD_KINDS`; `tests/test_head_kinds.py`
checks the contract for every registered kind.
"""
import dataclasses
import importlib
from typing import Any, Dict, Optional, Sequence, Tuple

import keras

from effdet_tf.errors import ConfigError
from effdet_tf.names import HEAD_KINDS, check_kind, check_name

PRIOR_PROBABILITY = 0.01
BOX_LOSSES = ("huber", "ciou")
CLS_LOSSES = ("focal", "varifocal")
# The `context` key of the positives of every detection head in the batch, when they
# share one loss normaliser (`MultiHeadDetector.loss_normalizer == "shared"`).
SHARED_POSITIVES = "shared_positives"
# The `context` key of `{head name: float32 [B]}`: the examples that train a detection
# head as background only (`background_mask` of the batch); absent when none does.
BACKGROUND_MASKS = "background_masks"
# The `context` key of the anchor assignment of detection heads (`train.assigner`): one of
# `ANCHOR_ASSIGNERS`, "iou" when absent.
ASSIGNER = "assigner"
ANCHOR_ASSIGNERS = ("iou", "atss", "tal")
TensorLike = Any  # a backend tensor, numpy array or KerasTensor


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """What one head predicts.

    Args:
        name: head name; a letter, then letters, digits, `_`.
        num_classes: classes of the head.
        kind: head kind, a key of `effdet_tf.names.HEAD_KINDS`.
        options: keyword arguments of the kind's layer (e.g. `box_loss_weight`); saved
            with the model, so a rebuilt model has them.

    Raises:
        ConfigError: bad name, class count or kind.

    Example:
        >>> HeadSpec("fruits", 3)
    """

    name: str
    num_classes: int
    kind: str = "detection"
    options: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name(self.name, "head name")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) \
                or self.num_classes < 1:
            raise ConfigError(
                f"head {self.name!r}: num_classes must be a positive int, got {self.num_classes!r}")
        check_kind(self.kind, f"head {self.name!r}")
        if not isinstance(self.options, dict):
            raise ConfigError(f"head {self.name!r}: options must be a mapping, "
                              f"got {self.options!r}")

    def to_config(self) -> dict:
        """Returns the spec as a plain dict.

        Returns:
            `{"name", "num_classes", "kind", "options"}`.
        """
        return dataclasses.asdict(self)


class TaskHead(keras.layers.Layer):  # pylint: disable=abstract-method  # add_metric is a Keras stub
    """Base class of heads: outputs from the pyramid, a masked loss, a decoder.

    Subclasses set `loss_components` (names of the scalar losses `compute_loss`
    returns; the detector tracks each as a metric `<head>_<component>`) and
    `target_keys` (the keys of `effdet_tf.batch_schema` their loss reads).

    Args:
        num_classes: classes predicted.
        image_size: side of the square model input.
        **kwargs: `keras.layers.Layer` arguments.
    """

    loss_components: Tuple[str, ...] = ()
    target_keys: Tuple[str, ...] = ()
    # The model-wide settings `build_head` passes to this kind (its options override them).
    shared_arguments: Tuple[str, ...] = ("channels", "num_layers")

    def __init__(self, *, num_classes: int, image_size: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.image_size = image_size

    @property
    def feature_source(self) -> str:
        """What the detector feeds the head: "pyramid" (`[P3, ..., P7]`, the default) or
        "backbone_c5" (`[C5]`, the backbone's last map)."""
        return "pyramid"

    def compute_loss(self, y_true: dict, y_pred: dict, example_mask: TensorLike,
                     context: dict) -> Dict[str, object]:
        """Returns this head's scalar float32 losses over the examples in `example_mask`.

        Args:
            y_true: the raw batch labels (`boxes`, `classes`, `dataset_id`, ...).
            y_pred: this head's outputs.
            example_mask: float32 `[B]`, 1 for the examples this head learns from.
            context: per-batch cache shared by all heads (e.g. the anchor matching).

        Returns:
            `{component: scalar}` for every name in `loss_components`.
        """
        raise NotImplementedError

    def positive_count(self, y_true: dict, y_pred: dict, example_mask: TensorLike,
                       context: dict) -> Optional[TensorLike]:
        # pylint: disable=unused-argument  # kinds without positives ignore the batch
        """The count this head's loss is normalised by when heads share one normaliser.

        None (the default): the head normalises itself and takes no part in the shared
        count (image-level heads average over their examples).
        """
        return None

    def example_targets(self, batch_size: int, seed: int = 0) -> Dict[str, Any]:
        """A random valid batch of this head's targets (numpy), for shape checks and tests.

        Args:
            batch_size: examples.
            seed: numpy seed.

        Returns:
            `{key: array}` for every key in `target_keys`.
        """
        raise NotImplementedError

    def serving_outputs(self, y_pred: dict, context: Any) -> Dict[str, Any]:
        """The outputs this head adds to the exported signature (TensorFlow graph).

        Args:
            y_pred: this head's raw outputs for the letterboxed frames.
            context: the export's `export.graph.ServingContext`: post-processing settings,
                class names, and `to_input_pixels(boxes)` for model-frame boxes.

        Returns:
            `{output name without the head prefix: tensor}`.
        """
        raise NotImplementedError

    def postprocess(self, y_pred: dict) -> dict:
        """Turns raw outputs into user-facing predictions (keras.ops, any backend).

        Args:
            y_pred: this head's outputs.

        Returns:
            A dict of tensors.
        """
        raise NotImplementedError

    def get_config(self) -> dict:
        """Returns the layer config.

        Returns:
            The config dict.
        """
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "image_size": self.image_size})
        return config


def head_class(kind: str) -> type:
    """The `TaskHead` subclass registered for a kind in `effdet_tf.names.HEAD_KINDS`."""
    module, name = HEAD_KINDS[check_kind(kind, "head")].split(":")
    return getattr(importlib.import_module(module), name)


def import_head_kinds() -> None:
    """Imports every registered head kind, so Keras can load saved models that use them."""
    for kind in HEAD_KINDS:
        head_class(kind)


def build_head(spec: HeadSpec, *, image_size: int, channels: int, num_layers: int,
               box_loss: str, norm: str = "batch", cls_loss: str = "focal",
               aspect_ratios: Optional[Sequence[float]] = None, towers: Any = None) -> TaskHead:
    """Builds the head a spec asks for.

    Args:
        spec: the head spec; its `options` override the shared arguments.
        image_size: side of the square model input.
        channels: intermediate width.
        num_layers: intermediate layers per net.
        box_loss: box loss of detection heads.
        norm: tower normalisation of detection heads (`"batch"` or `"group"`).
        cls_loss: class loss of detection heads (`"focal"` or `"varifocal"`).
        aspect_ratios: anchor aspect ratios of detection heads (None: EfficientDet's).
        towers: the `effdet_tf.detection_towers.TowerPool` detection heads take shared
            towers from (None: each builds its own).

    Only the shared arguments the kind lists in `shared_arguments` are passed to it.

    Returns:
        The head layer, named `spec.name`.

    Raises:
        ConfigError: an option the head kind does not take.

    Example:
        >>> build_head(HeadSpec("fruits", 3), image_size=512, channels=64, num_layers=3,
        ...            box_loss="huber")
    """
    kind = head_class(spec.kind)
    shared = {"channels": channels, "num_layers": num_layers, "box_loss": box_loss,
              "norm": norm, "cls_loss": cls_loss, "aspect_ratios": aspect_ratios,
              "towers": towers}
    arguments = {"num_classes": spec.num_classes, "image_size": image_size,
                 **{k: v for k, v in shared.items() if k in kind.shared_arguments},
                 **spec.options, "name": spec.name}
    try:
        return kind(**arguments)
    except (TypeError, ValueError) as err:  # Keras: ValueError for unknown keywords
        raise ConfigError(f"head {spec.name!r} ({spec.kind}): bad options "
                          f"{spec.options!r}: {err}") from err
