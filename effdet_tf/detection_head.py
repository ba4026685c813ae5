"""EfficientDet's detection head: class net + box net on every level, its anchors,
targets, masked loss, decoding and exported outputs. The `detection` head kind."""
import math
from typing import Any, Dict, List, Optional, Sequence

import keras
import numpy as np
from keras import ops

from effdet_tf import anchors as anchor_lib
from effdet_tf import batch_schema as schema
from effdet_tf import losses
from effdet_tf.box_coder import decode_boxes
from effdet_tf.atss import atss_match
from effdet_tf.errors import ConfigError
from effdet_tf.heads import (ANCHOR_ASSIGNERS, ASSIGNER, BACKGROUND_MASKS, BOX_LOSSES,
                             CLS_LOSSES, PRIOR_PROBABILITY, SHARED_POSITIVES, TaskHead, TensorLike)
from effdet_tf.detection_towers import TowerPool, box_predict_conv, build_towers
from effdet_tf.layers import separable_conv
from effdet_tf.postprocess import decode_predictions
from effdet_tf.tal import tal_match
from effdet_tf.targets import encode_targets, match_anchors


@keras.saving.register_keras_serializable(package="effdet_tf")
class DetectionHead(TaskHead):  # pylint: disable=abstract-method  # add_metric is a Keras stub
    """EfficientDet class net + box net, weights shared across levels, norm per level.

    Each net: `num_layers` x (separable conv 3x3 -> norm (one per level) -> swish), then a
    separable conv to `K * C` logits (bias `-log((1 - 0.01) / 0.01)`) or `K * 4` deltas,
    `K` anchors per location (9 with EfficientDet's three aspect ratios).
    The prediction convs run in float32 so outputs are float32 under mixed precision.

    Args:
        num_classes: classes of this head.
        image_size: side of the square model input (fixes the anchors).
        channels: width of the intermediate layers (64 in D0).
        num_layers: intermediate layers per net (3 in D0).
        box_loss: `"huber"` (on deltas, weight 50) or `"ciou"` (on decoded boxes).
        box_loss_weight: weight of the box loss; 50 for Huber, 1 for CIoU when None.
        cls_loss: `"focal"` (EfficientDet's) or `"varifocal"` (the class score learns the
            IoU of the positive's predicted box: `effdet_tf.losses.varifocal_loss`).
        norm: the towers' normalisation: `"batch"` (EfficientDet's BN, the default) or
            `"group"` (per image: `effdet_tf.layers.head_norm`).
        aspect_ratios: the anchors' width / height ratios at every location and scale;
            None: EfficientDet's `(1, 2, 0.5)`. Each ratio adds 3 anchors per location
            (`effdet_tf.anchors.check_aspect_ratios`).
        towers: the pool of shared towers (`effdet_tf.detection_towers.TowerPool`: the
            detector passes one to every detection head with `model.detection_towers:
            shared`, and heads with the same settings get the same class tower, box
            tower and box prediction conv); None: the head builds its own. Not part of
            `get_config`: the detector rebuilds the sharing.
        **kwargs: `keras.layers.Layer` arguments.

    Raises:
        ConfigError: unknown box loss, class loss or norm, or bad aspect ratios.

    Example:
        >>> head = DetectionHead(num_classes=3, image_size=512, name="fruits")
        >>> out = head(pyramid)  # {"class_logits": [B, 49104, 3], "box_deltas": [B, 49104, 4]}
    """

    loss_components = ("cls_loss", "box_loss")
    target_keys = (schema.BOXES, schema.CLASSES)
    shared_arguments = ("channels", "num_layers", "box_loss", "cls_loss", "norm",
                        "aspect_ratios", "towers")

    def __init__(self, *, num_classes: int, image_size: int, channels: int = 64,
                 num_layers: int = 3, box_loss: str = "huber", box_loss_weight=None,
                 norm: str = "batch", cls_loss: str = "focal",
                 aspect_ratios: Optional[Sequence[float]] = None,
                 towers: Optional[TowerPool] = None, **kwargs) -> None:
        super().__init__(num_classes=num_classes, image_size=image_size, **kwargs)
        if box_loss not in BOX_LOSSES:
            raise ConfigError(f"box_loss must be one of {BOX_LOSSES}, got {box_loss!r}")
        if cls_loss not in CLS_LOSSES:
            raise ConfigError(f"cls_loss must be one of {CLS_LOSSES}, got {cls_loss!r}")
        self.cls_loss = cls_loss
        self.norm = norm
        self.channels = channels
        self.num_layers = num_layers
        self.box_loss = box_loss
        self.box_loss_weight = box_loss_weight
        self.aspect_ratios = anchor_lib.check_aspect_ratios(
            anchor_lib.ASPECT_RATIOS if aspect_ratios is None else aspect_ratios,
            f"head {self.name!r}: aspect_ratios")
        self.anchors = anchor_lib.generate_anchors(image_size, aspect_ratios=self.aspect_ratios)
        self.num_levels = anchor_lib.MAX_LEVEL - anchor_lib.MIN_LEVEL + 1
        self.anchors_per_location = per_loc = anchor_lib.NUM_SCALES * len(self.aspect_ratios)
        shared = None if towers is None else towers.towers_for(
            channels=channels, num_layers=num_layers, norm=norm, anchors_per_location=per_loc)
        own = shared or build_towers(self.name, channels=channels, num_layers=num_layers,
                                     norm=norm)
        self.shares_towers = shared is not None
        self.towers_name = own.prefix
        # The same attributes, in the same order, as before towers could be shared: saved
        # weights and optimizer states of earlier runs map onto them unchanged.
        self.class_convs = list(own.class_convs)
        self.box_convs = list(own.box_convs)
        self.class_bns = list(own.class_norms)
        self.box_bns = list(own.box_norms)
        bias = -math.log((1.0 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
        self.class_predict = separable_conv(
            per_loc * num_classes, f"{self.name}_class_predict",
            bias_initializer=keras.initializers.Constant(bias), dtype="float32")
        self.box_predict = (shared.box_predict if shared is not None
                            else box_predict_conv(self.name, per_loc))

    def _tower(self, x: TensorLike, convs: Sequence, bns: Sequence, level_index: int,
               training: Optional[bool]) -> TensorLike:
        for i, conv in enumerate(convs):
            x = conv(x)
            x = bns[i * self.num_levels + level_index](x, training=training)
            x = ops.silu(x)
        return x

    def call(self, inputs: Sequence, training: Optional[bool] = None) -> dict:  # pylint: disable=arguments-differ  # a list
        """Runs both nets on every level and concatenates the levels.

        Args:
            inputs: `[P3, ..., P7]`.
            training: BN mode.

        Returns:
            `{"class_logits": float32 [B, A, C], "box_deltas": float32 [B, A, 4]}`.

        Raises:
            ValueError: not one feature map per level.
        """
        if len(inputs) != self.num_levels:
            raise ValueError(f"{self.name}: expected {self.num_levels} levels, got {len(inputs)}")
        logits: List = []
        deltas: List = []
        for level_index, feature in enumerate(inputs):
            count = feature.shape[1] * feature.shape[2] * self.anchors_per_location
            c = self._tower(feature, self.class_convs, self.class_bns, level_index, training)
            logits.append(ops.reshape(self.class_predict(c), (-1, count, self.num_classes)))
            b = self._tower(feature, self.box_convs, self.box_bns, level_index, training)
            deltas.append(ops.reshape(self.box_predict(b), (-1, count, 4)))
        return {"class_logits": ops.cast(ops.concatenate(logits, axis=1), "float32"),
                "box_deltas": ops.cast(ops.concatenate(deltas, axis=1), "float32")}

    def _match(self, y_true: dict, y_pred: dict, context: dict) -> Dict[str, Any]:
        """The anchor matching of the batch, computed once and kept in `context`.

        `context[ASSIGNER]` picks the rule: "iou" (IoU argmax, the default), "atss", or
        "tal" (task alignment, from this head's own predictions `y_pred`). The first two
        depend on the boxes and anchors only, so one matching serves every detection head
        with the same anchors; "tal" is kept per head.
        """
        assigner = context.get(ASSIGNER, "iou")
        if assigner not in ANCHOR_ASSIGNERS:
            raise ConfigError(f"anchor assigner must be one of {ANCHOR_ASSIGNERS}, "
                              f"got {assigner!r}")
        key = (f"anchor_match/{self.name}" if assigner == "tal"
               else f"anchor_match/{self.aspect_ratios}")
        if key not in context:
            boxes, classes = y_true[schema.BOXES], y_true[schema.CLASSES]
            if assigner == "tal":
                context[key] = tal_match(self.anchors, boxes, classes, y_pred["class_logits"],
                                         y_pred["box_deltas"])
            elif assigner == "atss":
                counts = [self.anchors_per_location * side * side
                          for side in anchor_lib.level_shapes(self.image_size)]
                context[key] = atss_match(self.anchors, boxes, classes, level_counts=counts,
                                          anchors_per_location=self.anchors_per_location)
            else:
                context[key] = match_anchors(self.anchors, boxes, classes)
        return context[key]

    def positive_count(self, y_true: dict, y_pred: dict, example_mask: TensorLike,
                       context: dict) -> TensorLike:
        """Positive anchors of this head's examples in the batch (this replica's).

        The detector sums it over its detection heads when they share one loss
        normaliser (`MultiHeadDetector.loss_normalizer == "shared"`).
        """
        mask = ops.cast(example_mask, "float32")
        match = self._match(y_true, y_pred, context)
        return ops.sum(ops.cast(match["num_positives"], "float32") * mask)

    def compute_loss(self, y_true: dict, y_pred: dict, example_mask: TensorLike,
                     context: dict) -> Dict[str, object]:
        """Class loss (focal or varifocal) + box loss over this head's examples, normalised
        by positives + 1.

        The positives are this head's own, or, when `context` holds `SHARED_POSITIVES`,
        those of every detection head in the batch (one normaliser for all: each positive
        anchor weighs the same whichever head it belongs to, as in one merged detector).

        Args:
            y_true: raw batch labels with `boxes` `[B, M, 4]` and `classes` `[B, M]`.
            y_pred: `{"class_logits", "box_deltas"}` of this head.
            example_mask: float32 `[B]`, 1 for this head's examples.
            context: per-batch cache; the anchor matching is stored under
                `"anchor_match/<aspect ratios>"` so detection heads with the same anchors
                share it. An optional `"cross_replica_sum"` callable sums a scalar over
                the replicas of a distributed step: the normaliser is then the global
                positives + 1, and the losses returned are this replica's share of the
                global loss (their sum over replicas). `BACKGROUND_MASKS` may map this
                head's name to float32 `[B]`: examples (of datasets that hold none of its
                objects) whose every anchor is trained as a negative, their boxes unused.

        Returns:
            `{"cls_loss": scalar, "box_loss": scalar}` (box loss already weighted).
        """
        match = self._match(y_true, y_pred, context)
        targets = encode_targets(self.anchors, match, self.num_classes)
        mask = ops.cast(example_mask, "float32")
        # Only the head's own examples keep their boxes' targets; a background example's
        # boxes belong to another head, so every one of its anchors is a negative.
        labelled = ops.cast(mask > 0, "float32")
        matched = ops.cast(targets["positive"], "float32") * labelled[:, None]      # [B, A]
        positive = matched * mask[:, None]
        ignore = ops.cast(targets["ignore"], "float32") * labelled[:, None]
        class_targets = ops.cast(targets["class_targets"], "float32") * labelled[:, None, None]
        example_weight = mask
        background = context.get(BACKGROUND_MASKS, {}).get(self.name)
        if background is not None:
            example_weight = mask + ops.cast(background, "float32")
        global_sum = context.get("cross_replica_sum") or (lambda value: value)
        count = context.get(SHARED_POSITIVES)
        if count is None:
            count = ops.sum(ops.cast(targets["num_positives"], "float32") * mask)
        normalizer = ops.stop_gradient(global_sum(count)) + 1.0
        anchor_weight = (1.0 - ignore) * example_weight[:, None]
        pred_boxes = None
        if self.cls_loss == "varifocal" or self.box_loss == "ciou":
            anchors = ops.convert_to_tensor(self.anchors, "float32")[None]
            pred_boxes = decode_boxes(y_pred["box_deltas"], anchors)
        if self.cls_loss == "focal":
            cls_per_anchor = losses.focal_loss(class_targets, y_pred["class_logits"])
        else:
            iou = ops.stop_gradient(losses.paired_iou(match["matched_boxes"], pred_boxes))
            quality = class_targets * (iou * matched)[..., None]
            cls_per_anchor = losses.varifocal_loss(quality, y_pred["class_logits"])
        cls_loss = ops.sum(cls_per_anchor * anchor_weight[..., None]) / normalizer
        if self.box_loss == "huber":
            weight = losses.HUBER_WEIGHT if self.box_loss_weight is None else self.box_loss_weight
            huber = losses.huber_loss(targets["box_targets"], y_pred["box_deltas"])
            box_loss = weight * ops.sum(huber * positive[..., None]) / (normalizer * 4.0)
        else:
            weight = losses.CIOU_WEIGHT if self.box_loss_weight is None else self.box_loss_weight
            ciou = losses.ciou_loss(match["matched_boxes"], pred_boxes)
            box_loss = weight * ops.sum(ciou * positive) / normalizer
        return {"cls_loss": cls_loss, "box_loss": box_loss}

    def example_targets(self, batch_size: int, seed: int = 0) -> Dict[str, Any]:
        """Random boxes (1-3 per image, 8-50% of the side) and classes.

        Args:
            batch_size: examples.
            seed: numpy seed.

        Returns:
            `{"boxes": float32 [B, 4, 4], "classes": int32 [B, 4]}`, -1 padded.
        """
        rng = np.random.default_rng(seed)
        size = float(self.image_size)
        boxes = np.full((batch_size, 4, 4), -1.0, np.float32)
        classes = np.full((batch_size, 4), -1, np.int32)
        for i in range(batch_size):
            for j in range(int(rng.integers(1, 4))):
                wh = rng.uniform(0.08, 0.5, 2) * size
                xy = rng.uniform(0.0, 1.0, 2) * (size - wh)
                boxes[i, j] = [*xy, *(xy + wh)]
                classes[i, j] = rng.integers(0, self.num_classes)
        return {schema.BOXES: boxes, schema.CLASSES: classes}

    def serving_outputs(self, y_pred: dict, context: Any) -> Dict[str, Any]:
        """NMS'd detections in input-image pixels (TensorFlow: `effdet_tf.nms_tf`).

        Args:
            y_pred: `{"class_logits", "box_deltas"}` of the letterboxed frames.
            context: the export's `ServingContext`.

        Returns:
            `boxes` float32 `[B, K, 4]` xyxy (padding rows -1), `scores` float32 `[B, K]`
            (padding 0), `classes` int32 `[B, K]` (padding -1), `num_detections` int32
            `[B]`, and `class_names` string `[B, K]` (padding "") when the context asks.
        """
        from effdet_tf import nms_tf  # pylint: disable=import-outside-toplevel  # TF-only, export only

        return nms_tf.serving_detections(self, y_pred, context)

    def postprocess(self, y_pred: dict) -> dict:
        """Decodes to pixel boxes clipped to the image and sigmoid scores (before NMS,
        which is TensorFlow-only: `effdet_tf.nms_tf.detect_head`).

        Args:
            y_pred: `{"class_logits", "box_deltas"}` of this head.

        Returns:
            `{"boxes": [B, A, 4] xyxy, "scores": [B, A, C]}`.
        """
        return decode_predictions(y_pred["class_logits"], y_pred["box_deltas"], self.anchors,
                                  self.image_size)

    def get_config(self) -> dict:
        """Returns the layer config.

        Returns:
            The config dict.
        """
        config = super().get_config()
        config.update({"channels": self.channels, "num_layers": self.num_layers,
                       "box_loss": self.box_loss, "box_loss_weight": self.box_loss_weight,
                       "norm": self.norm, "cls_loss": self.cls_loss,
                       "aspect_ratios": list(self.aspect_ratios)})
        return config
