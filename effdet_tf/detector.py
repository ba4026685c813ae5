"""The multi-head EfficientDet-D0 model: backbone -> BiFPN -> one head per task (kind)."""
import copy
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import keras
from keras import ops

from effdet_tf import anchors as anchor_lib
from effdet_tf import batch_schema as schema
from effdet_tf.bifpn import build_bifpn
from effdet_tf.detection_towers import tower_pool
from effdet_tf.errors import ConfigError
from effdet_tf.heads import (ASSIGNER, BACKGROUND_MASKS, BOX_LOSSES, CLS_LOSSES,
                             SHARED_POSITIVES, HeadSpec, build_head, import_head_kinds)

import_head_kinds()  # every kind registered with Keras, so saved models load

HeadsArg = Union[Mapping[str, int], Sequence[Union[HeadSpec, Mapping]]]
BACKBONE_STRIDES = (8, 16, 32)


def normalize_heads(heads: HeadsArg) -> List[HeadSpec]:
    """Turns `{name: num_classes}` or a list of specs (or their dicts) into `HeadSpec`s.

    Args:
        heads: the heads, in head-index (= dataset_id) order.

    Returns:
        A list of `HeadSpec`.

    Raises:
        ConfigError: empty, duplicated names, or a malformed entry.
    """
    if isinstance(heads, Mapping):
        specs = [HeadSpec(name, num) for name, num in heads.items()]
    elif isinstance(heads, (list, tuple)):
        specs = []
        for entry in heads:
            if isinstance(entry, HeadSpec):
                specs.append(entry)
            elif isinstance(entry, Mapping):
                try:
                    specs.append(HeadSpec(**entry))
                except TypeError as err:
                    raise ConfigError(f"bad head entry {dict(entry)!r}: {err}") from err
            else:
                raise ConfigError(f"a head must be a HeadSpec or a dict, got {entry!r}")
    else:
        raise ConfigError(f"heads must be a dict name->num_classes or a list, got {heads!r}")
    if not specs:
        raise ConfigError("at least one head is required")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"head names must be unique, got {names}")
    return specs


def _loss_weights(specs: Sequence[HeadSpec], weights: Any) -> List[float]:
    """Resolves head loss weights given as None, a dict by name or a list."""
    if weights is None:
        return [1.0] * len(specs)
    names = [s.name for s in specs]
    if isinstance(weights, Mapping):
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise ConfigError(f"head_loss_weights names unknown heads {unknown}; heads: {names}")
        return [float(weights.get(n, 1.0)) for n in names]
    weights = [float(w) for w in weights]
    if len(weights) != len(specs):
        raise ConfigError(f"head_loss_weights has {len(weights)} values for {len(specs)} heads")
    return weights


def _check_features(features: Any, image_size: int) -> None:
    """Checks that a backbone gives three maps at strides 8, 16, 32."""
    if not isinstance(features, (list, tuple)) or len(features) != 3:
        raise ConfigError("the backbone must output three feature maps [C3, C4, C5]")
    for feature, stride in zip(features, BACKBONE_STRIDES):
        if tuple(feature.shape[1:3]) != (image_size // stride,) * 2:
            raise ConfigError(
                f"backbone output of shape {tuple(feature.shape)} is not at stride {stride} "
                f"of a {image_size} input (expected strides {BACKBONE_STRIDES})")


@keras.saving.register_keras_serializable(package="effdet_tf")
class MultiHeadDetector(keras.Model):  # pylint: disable=abstract-method  # Keras/OpenVINO stubs
    """EfficientDet-D0 with one detection head per dataset, on any 3-level backbone.

    Input `[B, S, S, 3]` RGB in `0..255` (float32 or uint8), scaled to `0..1` inside.
    Output `{head: {"class_logits": [B, A, C_head], "box_deltas": [B, A, 4]}}`, float32.
    Each head learns only from the examples its column of `y["head_mask"]` selects
    (without one, head `i` from `dataset_id == i`). Compile without a loss:
    `compute_loss` computes it and tracks the metrics `<head>_loss`,
    `<head>_cls_loss` and `<head>_box_loss`.

    Args:
        backbone: a Keras model taking `[B, S, S, 3]` in `0..1` and giving `[C3, C4, C5]`
            at strides 8, 16, 32.
        heads: `{name: num_classes}` or a list of `HeadSpec` (or their dicts), in
            dataset_id order.
        image_size: `S`, a multiple of 128.
        fpn_channels: BiFPN width.
        fpn_cells: BiFPN cells.
        head_layers: intermediate layers per class / box net.
        head_loss_weights: None (all 1), `{name: weight}` or a list in head order.
        box_loss: `"huber"` or `"ciou"`.
        head_norm: detection heads' tower normalisation, `"batch"` or `"group"`.
        cls_loss: detection heads' class loss, `"focal"` or `"varifocal"`.
        anchor_aspect_ratios: detection heads' anchor width / height ratios (None:
            EfficientDet's 1, 2, 0.5); a head's `aspect_ratios` option overrides it.
        detection_towers: `"per_head"` (each detection head its own class and box
            towers) or `"shared"` (one class tower, box tower and box prediction for all
            detection heads with the same settings, each keeping its class prediction:
            `effdet_tf.detection_towers`).
        freeze_backbone: backbone non-trainable, its BN in inference mode.
        **kwargs: `keras.Model` arguments (name, ...).

    Raises:
        ConfigError: bad heads, sizes or backbone.

    Example:
        >>> model = MultiHeadDetector(backbone=backbone, heads={"fruits": 3, "household": 3})
        >>> model.compile(optimizer="sgd")
        >>> model.fit(images, {"boxes": b, "classes": c, "dataset_id": d})
    """

    def __init__(self, *, backbone: keras.Model, heads: HeadsArg,  # pylint: disable=too-many-arguments  # one per setting
                 image_size: int = 512, fpn_channels: int = 64, fpn_cells: int = 3,
                 head_layers: int = 3, head_loss_weights: Any = None, box_loss: str = "huber",
                 head_norm: str = "batch", freeze_backbone: bool = False,
                 cls_loss: str = "focal",
                 anchor_aspect_ratios: Optional[Sequence[float]] = None,
                 detection_towers: str = "per_head", **kwargs) -> None:
        specs = normalize_heads(heads)
        anchor_lib.check_image_size(image_size)
        if box_loss not in BOX_LOSSES:
            raise ConfigError(f"box_loss must be one of {BOX_LOSSES}, got {box_loss!r}")
        if cls_loss not in CLS_LOSSES:
            raise ConfigError(f"cls_loss must be one of {CLS_LOSSES}, got {cls_loss!r}")
        weights = _loss_weights(specs, head_loss_weights)
        if freeze_backbone:
            backbone.trainable = False

        images = keras.Input((image_size, image_size, 3), name="images")
        scaled = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(images)
        features = backbone(scaled)
        _check_features(features, image_size)
        pyramid = build_bifpn(list(features), channels=fpn_channels, cells=fpn_cells)
        towers = tower_pool(detection_towers)
        head_layers_list = [build_head(spec, image_size=image_size, channels=fpn_channels,
                                       num_layers=head_layers, box_loss=box_loss,
                                       norm=head_norm, cls_loss=cls_loss,
                                       aspect_ratios=anchor_aspect_ratios, towers=towers)
                            for spec in specs]
        sources = {"pyramid": list(pyramid), "backbone_c5": [features[-1]]}
        outputs = {spec.name: head(sources[head.feature_source])
                   for spec, head in zip(specs, head_layers_list)}
        super().__init__(inputs=images, outputs=outputs, **kwargs)
        self._pyramid = list(pyramid)

        self.backbone = backbone
        self.image_size = image_size
        self.fpn_channels = fpn_channels
        self.fpn_cells = fpn_cells
        self.head_layers = head_layers
        self.box_loss = box_loss
        self.cls_loss = cls_loss
        self.head_norm = head_norm
        self.detection_towers = detection_towers
        self.anchor_aspect_ratios = (None if anchor_aspect_ratios is None
                                     else [float(r) for r in anchor_aspect_ratios])
        self.freeze_backbone = freeze_backbone
        self._specs = tuple(specs)
        # Distributed training (train/strategy.py) sets a callable summing a scalar over
        # the replicas of a step; None: one replica (or a global SPMD step, as under JAX).
        self.cross_replica_sum = None
        # A training setting (train.loss_normalizer), not saved with the model: "shared"
        # normalises every detection head by the positives of all of them in the batch,
        # "per_head" each by its own.
        self.loss_normalizer = "shared"
        # A training setting (train.assigner), not saved with the model: how detection
        # heads assign anchors to boxes, "iou" (IoU argmax) or "atss".
        self.anchor_assigner = "iou"
        self._loss_weight_values = tuple(weights)
        self._heads = tuple(head_layers_list)
        self._head_metrics = {}
        for spec, head in zip(specs, head_layers_list):
            for suffix in ("loss",) + tuple(head.loss_components):
                metric_name = f"{spec.name}_{suffix}"
                if metric_name in self._head_metrics or hasattr(self, metric_name):
                    raise ConfigError(f"head name {spec.name!r} clashes with attribute "
                                      f"{metric_name!r}; rename the head")
                metric = keras.metrics.Mean(name=metric_name)
                setattr(self, metric_name, metric)
                self._head_metrics[metric_name] = metric

    @property
    def feature_pyramid(self) -> keras.Model:
        """The shared trunk as its own model: images `[B, S, S, 3]` (0..255) -> `[P3..P7]`.

        The counterpart of keras-hub's `Backbone`: backbone and BiFPN, the layers (and
        weights) of this detector, without the heads. Use it to extract features or to
        put other heads on them.
        """
        return keras.Model(self.inputs, self._pyramid, name="feature_pyramid")

    @property
    def head_names(self) -> List[str]:
        """Head names in head-index (= dataset_id) order."""
        return [s.name for s in self._specs]

    @property
    def num_classes(self) -> Dict[str, int]:
        """Classes per head, `{name: num_classes}`."""
        return {s.name: s.num_classes for s in self._specs}

    @property
    def head_specs(self) -> List[HeadSpec]:
        """The head specs, in head order."""
        return list(self._specs)

    @property
    def task_heads(self) -> Dict[str, keras.layers.Layer]:
        """The head layers by name."""
        return {s.name: h for s, h in zip(self._specs, self._heads)}

    @property
    def head_loss_weights(self) -> Dict[str, float]:
        """Loss weight per head."""
        return {s.name: w for s, w in zip(self._specs, self._loss_weight_values)}

    def compute_loss(self, x: Any = None, y: Optional[dict] = None,  # pylint: disable=arguments-differ  # Keras signature
                     y_pred: Optional[dict] = None, sample_weight: Any = None,
                     training: bool = True) -> Any:
        """Sum over heads of `weight_h * (focal_h + box_h)`, each over its own examples.

        With `loss_normalizer == "shared"` every detection head divides by the positive
        anchors of all detection heads in the batch (+ 1) instead of its own, so a positive
        weighs the same in every head and a dataset with few images in the batch does not
        get a larger gradient per example (its head's share is its share of the boxes).

        Under a multi-replica step (`self.cross_replica_sum` set), every head is normalised
        by its positives + 1 over the global batch and the value returned is this
        replica's share of the global loss: the shares sum to the single-device loss of
        the same global batch, as Keras expects before it sums the gradients. The tracked
        per-head metrics are rescaled by the replica count so that their mean over the
        replicas is the global value.

        Args:
            x: images; used only when `y_pred` is None.
            y: the targets (`effdet_tf.batch_schema`): every key the heads read
                (`boxes` `[B, M, 4]`, `classes` `[B, M]` for detection) and the routing,
                `head_mask` `[B, H]` or else `dataset_id` `[B]` (see `head_mask`), and
                optionally `background_mask` `[B, H]`: examples that train a detection
                head as background only (every anchor negative, their boxes ignored).
            y_pred: the model outputs.
            sample_weight: optional `[B]` example weights, multiplied into every head's mask.
            training: forwarded to the model when `y_pred` is None.

        Returns:
            float32 scalar loss.

        Raises:
            ValueError: `y` lacks a key.
        """
        if y_pred is None:
            self._checked_head_mask(y)  # a bad `y` fails before the forward pass
            y_pred = self(x, training=training)
        total = ops.convert_to_tensor(0.0, "float32")
        for value in self.head_losses(y, y_pred, sample_weight).values():
            total = total + value
        if self.losses:
            # Every replica adds the same regularisation: its share is 1 / replicas.
            replicas = (1.0 if self.cross_replica_sum is None
                        else self.cross_replica_sum(ops.convert_to_tensor(1.0, "float32")))
            total = total + ops.cast(ops.sum(ops.stack(self.losses)), "float32") / replicas
        return total

    def head_losses(self, y: dict, y_pred: dict, sample_weight: Any = None) -> Dict[str, Any]:
        """Each head's weighted loss, `{name: weight_h * (sum of its loss parts)}`.

        `compute_loss` is their sum (plus the layers' regularisation); a per-head gradient
        (`python -m train.grad_check`) is the gradient of one of them. Updates the per-head
        loss metrics as training does.

        Args:
            y: the targets, as for `compute_loss`.
            y_pred: the model outputs.
            sample_weight: optional `[B]` example weights, multiplied into every head's mask.

        Returns:
            float32 scalars by head name, in head order.

        Raises:
            ValueError: `y` lacks a key.
        """
        head_mask = self._checked_head_mask(y)
        context: dict = {"cross_replica_sum": self.cross_replica_sum,
                         ASSIGNER: self.anchor_assigner}
        replicas = (1.0 if self.cross_replica_sum is None
                    else self.cross_replica_sum(ops.convert_to_tensor(1.0, "float32")))
        masks = [head_mask[:, index] for index in range(len(self._heads))]
        background = y.get(schema.BACKGROUND_MASK)
        backgrounds = ([ops.cast(background[:, index], "float32")
                        for index in range(len(self._heads))] if background is not None
                       else [None] * len(self._heads))
        if sample_weight is not None:
            weight = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
            masks = [m * weight for m in masks]
            backgrounds = [None if b is None else b * weight for b in backgrounds]
        if background is not None:
            context[BACKGROUND_MASKS] = {spec.name: b
                                         for spec, b in zip(self._specs, backgrounds)}
        if self.loss_normalizer == "shared":
            counts = [c for c in (head.positive_count(y, y_pred[spec.name], m, context)
                                  for spec, head, m in zip(self._specs, self._heads, masks))
                      if c is not None]
            if counts:
                context[SHARED_POSITIVES] = ops.sum(ops.stack(counts))
        result = {}
        for index, (spec, head) in enumerate(zip(self._specs, self._heads)):
            mask = masks[index]
            parts = head.compute_loss(y, y_pred[spec.name], mask, context)
            # A batch without any example of this head (e.g. a validation batch of another
            # dataset) says nothing about it: it is left out of the head's running means.
            present = self._any_example(mask if backgrounds[index] is None
                                        else mask + backgrounds[index])
            head_total = ops.convert_to_tensor(0.0, "float32")
            for part_name, value in parts.items():
                head_total = head_total + value
                self._head_metrics[f"{spec.name}_{part_name}"].update_state(
                    value * replicas, sample_weight=present)
            self._head_metrics[f"{spec.name}_loss"].update_state(
                head_total * replicas, sample_weight=present)
            result[spec.name] = self._loss_weight_values[index] * head_total
        return result

    def _checked_head_mask(self, y: Optional[dict]) -> Any:
        """`head_mask(y)`, after checking that `y` has every key the heads read."""
        head_mask = self.head_mask(y)
        needed = sorted({key for head in self._heads for key in head.target_keys})
        missing = [k for k in needed if k not in y]
        if missing:
            raise ValueError(f"compute_loss needs y with keys {', '.join(needed)} and "
                             f"{schema.HEAD_MASK} or {schema.DATASET_ID}; missing {missing}")
        return head_mask

    def head_mask(self, y: Optional[dict]) -> Any:
        """float32 `[B, H]`: which heads each example trains.

        `y["head_mask"]` when given (the data pipeline routes each dataset to its heads);
        otherwise `y["dataset_id"]` with dataset `i` training head `i`, the routing of a
        config without a `heads:` section.

        Raises:
            ValueError: `y` has neither key.
        """
        if y is not None and schema.HEAD_MASK in y:
            return ops.cast(y[schema.HEAD_MASK], "float32")
        if y is None or schema.DATASET_ID not in y:
            raise ValueError(f"compute_loss needs y[{schema.HEAD_MASK!r}] or "
                             f"y[{schema.DATASET_ID!r}] to route examples to heads")
        dataset_id = ops.reshape(ops.cast(y[schema.DATASET_ID], "int32"), (-1,))
        return ops.one_hot(dataset_id, len(self._specs), dtype="float32")

    def _any_example(self, mask: Any) -> Any:
        """1.0 when the (global) batch holds an example of the masked head, else 0.0."""
        count = ops.sum(ops.cast(mask > 0, "float32"))
        if self.cross_replica_sum is not None:
            count = self.cross_replica_sum(count)
        return ops.cast(count > 0, "float32")

    def get_config(self) -> dict:
        """Returns a config that `from_config` turns back into this model.

        Returns:
            The config dict (the backbone serialised inside).
        """
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "heads": [s.to_config() for s in self._specs],
            "image_size": self.image_size,
            "fpn_channels": self.fpn_channels,
            "fpn_cells": self.fpn_cells,
            "head_layers": self.head_layers,
            "head_loss_weights": list(self._loss_weight_values),
            "box_loss": self.box_loss,
            "cls_loss": self.cls_loss,
            "head_norm": self.head_norm,
            "anchor_aspect_ratios": self.anchor_aspect_ratios,
            "detection_towers": self.detection_towers,
            "freeze_backbone": self.freeze_backbone,
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects: Optional[dict] = None):
        """Rebuilds a model from `get_config`.

        Args:
            config: the config dict.
            custom_objects: passed to the backbone deserialisation.

        Returns:
            The model.
        """
        config = copy.deepcopy(dict(config))
        backbone = config["backbone"]
        if isinstance(backbone, dict):
            config["backbone"] = keras.saving.deserialize_keras_object(
                backbone, custom_objects=custom_objects)
        return cls(**config)


def _load_backbone_weights(backbone: keras.Model, path: str) -> None:
    """Loads backbone weights: Darknet `.weights` or a Keras `.weights.h5`."""
    from effdet_tf.darknet import load_backbone_weights  # pylint: disable=import-outside-toplevel  # Darknet code only when asked

    if not os.path.exists(path):
        raise ConfigError(f"backbone_weights file {path} does not exist")
    load_backbone_weights(backbone, path)


def build_detector(*, heads: HeadsArg, image_size: int = 512,  # pylint: disable=too-many-arguments  # one keyword per ModelConfig setting
                   backbone: Union[str, keras.Model] = "cspdarknet53",
                   freeze_backbone: bool = False, backbone_weights: Optional[str] = None,
                   fpn_channels: int = 64, fpn_cells: int = 3, head_layers: int = 3,
                   head_loss_weights: Any = None, box_loss: str = "huber",
                   head_norm: str = "batch", cls_loss: str = "focal",
                   anchor_aspect_ratios: Optional[Sequence[float]] = None,
                   detection_towers: str = "per_head") -> MultiHeadDetector:
    """Builds the multi-head EfficientDet-D0 detector.

    Args:
        heads: `{name: num_classes}` or a list of `HeadSpec`; order = dataset_id.
        image_size: side of the square input, a multiple of 128.
        backbone: `"cspdarknet53"` or a Keras model giving `[C3, C4, C5]` at strides
            8/16/32 from `0..1` input.
        freeze_backbone: make the backbone non-trainable (BN in inference mode).
        backbone_weights: weights file for the backbone (Darknet `.weights` or a Keras
            `.weights.h5`).
        fpn_channels: BiFPN width (64 in D0).
        fpn_cells: BiFPN cells (3 in D0).
        head_layers: intermediate layers per class / box net (3 in D0).
        head_loss_weights: None, `{name: weight}` or a list in head order.
        box_loss: `"huber"` (automl) or `"ciou"` (YOLOv4).
        head_norm: detection heads' tower normalisation: `"batch"` (automl) or `"group"`
            (per image, independent of the batch: FCOS / ATSS heads).
        cls_loss: detection heads' class loss: `"focal"` (automl) or `"varifocal"`
            (IoU-aware class scores: VarifocalNet).
        anchor_aspect_ratios: detection heads' anchor width / height ratios (None:
            EfficientDet's 1, 2, 0.5; each ratio is 3 anchors per location).
        detection_towers: `"per_head"` or `"shared"` (one class tower, box tower and box
            prediction for every detection head: `effdet_tf.detection_towers`).

    Returns:
        A `MultiHeadDetector`.

    Raises:
        ConfigError: unknown backbone name, missing weights file, or bad arguments.

    Example:
        >>> model = build_detector(heads={"fruits": 3, "household": 3}, image_size=512)
        >>> model.task_heads["fruits"].anchors.shape
        (49104, 4)
    """
    anchor_lib.check_image_size(image_size)
    if isinstance(backbone, str):
        if backbone != "cspdarknet53":
            raise ConfigError(f"unknown backbone {backbone!r}; expected 'cspdarknet53' "
                              "or a keras.Model")
        from effdet_tf.backbones.cspdarknet53 import (  # pylint: disable=import-outside-toplevel  # built on demand
            build_cspdarknet53)
        backbone_model = build_cspdarknet53(input_shape=(image_size, image_size, 3))
    elif isinstance(backbone, keras.Model):
        backbone_model = backbone
    else:
        raise ConfigError(f"backbone must be 'cspdarknet53' or a keras.Model, got {backbone!r}")
    if backbone_weights:
        _load_backbone_weights(backbone_model, str(backbone_weights))
    return MultiHeadDetector(backbone=backbone_model, heads=heads, image_size=image_size,
                             fpn_channels=fpn_channels, fpn_cells=fpn_cells,
                             head_layers=head_layers, head_loss_weights=head_loss_weights,
                             box_loss=box_loss, head_norm=head_norm, cls_loss=cls_loss,
                             anchor_aspect_ratios=anchor_aspect_ratios,
                             detection_towers=detection_towers,
                             freeze_backbone=freeze_backbone)
