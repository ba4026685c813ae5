"""The exported computation: letterbox -> detector -> decode -> NMS -> input-image boxes.

Everything here is TensorFlow and traceable in one `tf.function`, so the same graph
goes into the SavedModel and, through tf2onnx, into ONNX. Letterboxing repeats the
arithmetic of `data_pipelines.decode.letterbox` (centred, pad value 114, bilinear,
rounded to integers) on a whole batch; `tests/test_export.py` checks they agree.
"""
import dataclasses
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from data_pipelines.decode import PAD_VALUE, letterbox_geometry, unletterbox
from effdet_tf.anchors import check_image_size
from effdet_tf.errors import ConfigError, ExportError

IMAGES_KEY = "images"
RAW_KEYS = ("class_logits", "box_deltas")  # the raw outputs of a detection head
WEIGHT_CHOICES = ("best", "last", "final")


def letterbox_batch(images: tf.Tensor, image_size: int) -> Tuple[tf.Tensor, tf.Tensor,
                                                                  tf.Tensor]:
    """Letterboxes a batch of same-size images into `S x S` frames (as the data pipeline).

    Args:
        images: uint8 (or float 0..255) `[B, H, W, 3]`, any `H, W`.
        image_size: the model side `S`.

    Returns:
        `(frames, scale, pad_xy)`: float32 `[B, S, S, 3]` holding integers 0..255,
        float32 scalar scale, float32 `[2]` left and top padding. A model-frame point
        `(x, y)` is `((x - pad_x) / scale, (y - pad_y) / scale)` in the input image.
    """
    orig_hw = tf.shape(images)[1:3]
    scale_xy, new_hw, pad_xy = letterbox_geometry(orig_hw, image_size)
    resized = tf.image.resize(tf.cast(images, tf.float32), new_hw, method="bilinear")
    resized = tf.clip_by_value(tf.round(resized), 0.0, 255.0)
    pad = tf.cast(pad_xy, tf.int32)
    paddings = tf.stack([
        tf.constant([0, 0], tf.int32),
        tf.stack([pad[1], image_size - new_hw[0] - pad[1]]),
        tf.stack([pad[0], image_size - new_hw[1] - pad[0]]),
        tf.constant([0, 0], tf.int32)])
    frames = tf.pad(resized, paddings, constant_values=float(PAD_VALUE))
    frames = tf.ensure_shape(frames, [None, image_size, image_size, 3])
    return frames, scale_xy[0], pad_xy


@dataclasses.dataclass(frozen=True)
class ServingContext:
    """What a head needs to add its outputs to the exported graph (`serving_outputs`).

    Attributes:
        score_threshold: NMS score threshold.
        iou_threshold: NMS IoU threshold.
        max_detections: K, detections kept per image and head.
        class_names: `{head: [name, ...]}`.
        with_names: add string class-name outputs.
        scale: float32 scalar letterbox scale of the batch.
        pad_xy: float32 `[2]` letterbox padding.
        orig_hw: int32 `[2]` input height and width.
    """

    score_threshold: float
    iou_threshold: float
    max_detections: int
    class_names: Mapping[str, Sequence[str]]
    with_names: bool
    scale: Any
    pad_xy: Any
    orig_hw: Any

    def to_input_pixels(self, boxes: tf.Tensor) -> tf.Tensor:
        """Model-frame xyxy boxes -> input-image pixels, clipped to the image."""
        return unletterbox(boxes, self.scale, self.pad_xy, self.orig_hw)


class DetectionGraph:
    """Holds a detector and its post-processing settings; builds the exported functions.

    Args:
        model: a `MultiHeadDetector` (any object with `head_names`, `head_specs`, `task_heads`,
            `image_size` and a call returning `{head: {"class_logits", "box_deltas"}}`).
        class_names: `{head: [name, ...]}` in the model's class order.
        score_threshold: NMS score threshold.
        iou_threshold: NMS IoU threshold.
        max_detections: K, detections kept per image and head.
        with_names: add `<head>_class_names` string outputs (ONNX may not carry strings).
        with_raw: add the raw `<head>_class_logits` / `<head>_box_deltas` of the
            letterboxed frames to the detection outputs (the ONNX file carries them so
            that `export.verify` can compare them).

    Example:
        >>> graph = DetectionGraph(model, {"fruits": ["apple"]}, max_detections=100)
        >>> graph.detect(tf.zeros([1, 480, 640, 3], tf.uint8))["fruits_boxes"].shape
        TensorShape([1, 100, 4])
    """

    def __init__(self, model: Any, class_names: Mapping[str, Sequence[str]], *,
                 score_threshold: float, iou_threshold: float, max_detections: int,
                 with_names: bool = True, with_raw: bool = False) -> None:
        self.model = model
        self.head_names: List[str] = list(model.head_names)
        self.detection_heads: List[str] = [spec.name for spec in model.head_specs
                                           if spec.kind == "detection"]
        self.class_names = {head: [str(n) for n in class_names[head]]
                            for head in self.head_names}
        self.image_size = int(model.image_size)
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        self.with_names = with_names
        self.with_raw = with_raw

    @property
    def detect_signature(self) -> List[tf.TensorSpec]:
        """Input of `detect`: uint8 `[B, H, W, 3]`, every dimension but channels free."""
        return [tf.TensorSpec([None, None, None, 3], tf.uint8, name=IMAGES_KEY)]

    @property
    def raw_signature(self) -> List[tf.TensorSpec]:
        """Input of `raw`: float32 `[B, S, S, 3]` in 0..255."""
        size = self.image_size
        return [tf.TensorSpec([None, size, size, 3], tf.float32, name=IMAGES_KEY)]

    def _raw_outputs(self, frames: tf.Tensor) -> Dict[str, Dict[str, tf.Tensor]]:
        """Runs the detector in inference mode; float32 outputs per head."""
        outputs = self.model(frames, training=False)
        return {head: {key: tf.cast(value, tf.float32) for key, value in outputs[head].items()}
                for head in self.head_names}

    def raw(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Raw outputs of already letterboxed frames.

        Args:
            images: float32 `[B, S, S, 3]`, 0..255.

        Returns:
            `{"<head>_class_logits": [B, A, C], "<head>_box_deltas": [B, A, 4]}`.
        """
        outputs = self._raw_outputs(tf.cast(images, tf.float32))
        return {f"{head}_{key}": outputs[head][key]
                for head in self.head_names for key in outputs[head]}

    def detect(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Detections of every head, in input-image pixels.

        Args:
            images: uint8 `[B, H, W, 3]`, the same size within the batch.

        Returns:
            Per head: `<head>_boxes` float32 `[B, K, 4]` xyxy (padding rows -1),
            `<head>_scores` float32 `[B, K]` (padding 0), `<head>_classes` int32 `[B, K]`
            (padding -1), `<head>_class_names` string `[B, K]` (padding ""; only
            `with_names`), `<head>_num_detections` int32 `[B]`; plus the raw outputs when
            `with_raw`.
        """
        orig_hw = tf.shape(images)[1:3]
        frames, scale, pad_xy = letterbox_batch(images, self.image_size)
        raw = self._raw_outputs(frames)
        context = ServingContext(
            score_threshold=self.score_threshold, iou_threshold=self.iou_threshold,
            max_detections=self.max_detections, class_names=self.class_names,
            with_names=self.with_names, scale=scale, pad_xy=pad_xy, orig_hw=orig_hw)
        heads = self.model.task_heads
        result = {}
        for head in self.head_names:
            for key, value in heads[head].serving_outputs(raw[head], context).items():
                result[f"{head}_{key}"] = value
            if self.with_raw:
                for key, value in raw[head].items():
                    result[f"{head}_{key}"] = value
        return result

    def detect_function(self) -> tf.types.experimental.GenericFunction:
        """`detect` as a `tf.function` with its any-size uint8 input signature."""
        return tf.function(self.detect, input_signature=self.detect_signature,
                           autograph=False)

    def raw_function(self) -> tf.types.experimental.GenericFunction:
        """`raw` as a `tf.function` with its float32 `[B, S, S, 3]` input signature."""
        return tf.function(self.raw, input_signature=self.raw_signature, autograph=False)


def graph_from_run(config: Any, model: Any, classes: Mapping[str, Mapping], *,
                   with_names: bool = True, with_raw: bool = False) -> DetectionGraph:
    """Builds the `DetectionGraph` of a loaded run (`train.run_dir.load_run` output).

    Args:
        config: the run's `ExperimentConfig` (its `eval` section sets the NMS).
        model: the detector.
        classes: `{head: {"names": [...], ...}}`.
        with_names: see `DetectionGraph`.
        with_raw: see `DetectionGraph`.

    Returns:
        The graph.
    """
    return DetectionGraph(
        model, {head: classes[head]["names"] for head in model.head_names},
        score_threshold=config.eval.score_threshold, iou_threshold=config.eval.iou_threshold,
        max_detections=config.eval.max_detections, with_names=with_names, with_raw=with_raw)


def copy_weights(source: Any, target: Any) -> None:
    """Copies every weight of `target` from the weight of `source` with the same path.

    Args:
        source: a built Keras model holding the weights.
        target: a built Keras model of the same architecture (or a part of it: fewer
            heads, another input size).

    Raises:
        ExportError: a weight of `target` has no counterpart of the same shape.
    """
    weights = {var.path: var for var in source.weights}
    missing = [var.path for var in target.weights
               if var.path not in weights or tuple(weights[var.path].shape) != tuple(var.shape)]
    if missing:
        raise ExportError(f"{len(missing)} weight(s) without a counterpart of the same shape, "
                          f"e.g. {missing[:3]}")
    for var in target.weights:
        var.assign(weights[var.path])


def resize_detector(config: Any, model: Any, classes: Mapping[str, Mapping],
                    image_size: int) -> Tuple[Any, Any]:
    """The run's detector rebuilt for another square input side, holding the same weights.

    The detector is fully convolutional; only the anchors and the letterbox size depend
    on the side, so a model trained at 512 can be exported at 640 (or at 128 for a quick
    check).

    Args:
        config: the run's `ExperimentConfig`.
        model: its loaded detector.
        classes: `{head: {"names": [...], ...}}`.
        image_size: the new side, a positive multiple of 128.

    Returns:
        `(config, model)` for the new side (the inputs when the side is unchanged).

    Raises:
        ConfigError: the side is not a positive multiple of 128.
    """
    from train.run_dir import build_model  # pylint: disable=import-outside-toplevel  # heavy

    if image_size == int(model.image_size):
        return config, model
    try:
        check_image_size(image_size)
    except ConfigError as err:
        raise ConfigError(f"--image-size: {err}") from err
    config = dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                  image_size=image_size))
    resized = build_model(config, classes)
    copy_weights(model, resized)
    return config, resized


def load_graph(run: str, *, weights: str = "best", with_names: bool = True,
               with_raw: bool = False,
               image_size: Optional[int] = None) -> Tuple[DetectionGraph, dict]:
    """Loads a run folder and wraps its detector for export.

    Args:
        run: the run folder.
        weights: "best" (falls back to "last"), "last" or "final" (`model.keras`).
        with_names: see `DetectionGraph`.
        with_raw: see `DetectionGraph`.
        image_size: export at this input side instead of the trained one (a multiple of
            128); None keeps the run's.

    Returns:
        `(graph, classes)` with `classes` the run's `classes.json` table.

    Raises:
        ConfigError: no such folder, it lacks a config, classes or weights, or a bad
            `image_size`.
    """
    config, model, classes = load_run_checked(run, weights, image_size)
    return graph_from_run(config, model, classes, with_names=with_names,
                          with_raw=with_raw), classes


def load_run_checked(run: str, weights: str,
                     image_size: Optional[int] = None) -> Tuple[Any, Any, dict]:
    """`train.run_dir.load_run` with the checks the export CLIs need, at any input side.

    Args:
        run: the run folder.
        weights: one of `WEIGHT_CHOICES`.
        image_size: rebuild the detector at this side (`resize_detector`); None keeps
            the run's.

    Returns:
        `(config, model, classes)`.

    Raises:
        ConfigError: bad `weights`, no such folder, no classes for a head, or a bad
            `image_size`.
    """
    from train.run_dir import load_run  # pylint: disable=import-outside-toplevel  # builds Keras

    if weights not in WEIGHT_CHOICES:
        raise ConfigError(f"weights must be one of {', '.join(WEIGHT_CHOICES)}, got {weights!r}")
    if not os.path.isdir(run):
        raise ConfigError(f"run folder {run} does not exist")
    config, model, classes = load_run(run, weights=weights)
    missing = [head for head in model.head_names if head not in classes]
    if missing:
        raise ConfigError(f"{run}: classes.json has no entry for head(s) {missing}")
    if image_size is not None:
        config, model = resize_detector(config, model, classes, image_size)
    return config, model, classes
