"""Scoring an exported model (ONNX file, int8 ONNX file or SavedModel) like the Keras one.

`train.evaluate --model EXPORT` hands an `ExportRunner` to the same evaluation code that
scores the Keras detector, so an export's figures (COCO metrics, accuracy, tag F1) are
measured on the same images with the same rules: the test of a quantised file is its
metric, not only its agreement with fp32. The evaluation pipeline feeds letterboxed
`S x S` uint8 frames; the export letterboxes again inside, which at `S x S` changes
nothing, so its boxes are in the frame the Keras path decodes. Its NMS settings are the
ones baked in at export (`preprocessing.json`, from the run's `eval` section).

`detections`, `probabilities` and `thresholds` are the one place that tells the two
kinds of model apart.
"""
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from effdet_tf.config import ExperimentConfig
from effdet_tf.errors import ConfigError


class ExportRunner:
    """An export opened in its runtime, answering per head.

    Attributes:
        export: the located export (`export.serve_model.Export`).
        label: `<backend>:<folder>/<file>`, the model file and the folder holding it
            (`onnx:demo_int8/model.onnx`, `saved_model:demo/saved_model`).
    """

    def __init__(self, path: str, backend: Optional[str] = None, threads: int = 0) -> None:
        """Opens the export.

        Args:
            path: a `.onnx` file, a SavedModel folder or an export folder.
            backend: "onnx" or "saved_model" (None: ONNX where there is one).
            threads: intra-op threads of ONNX Runtime (0: its default).

        Raises:
            ConfigError: `path` holds no model of that backend.
            ExportError: the sidecar files are missing or the runtime cannot load it.
        """
        # pylint: disable-next=import-outside-toplevel  # ONNX Runtime or TF, on demand
        from export.serve_model import find_export, load_backend

        self.export = find_export(path, backend)
        self.backend = load_backend(self.export, threads)
        self.heads = {head.name: head for head in self.export.heads}
        path = os.path.normpath(os.path.abspath(self.export.path))
        folder, name = os.path.split(path)
        self.label = f"{self.export.backend}:{os.path.basename(folder)}/{name}"

    def check_run(self, cfg: ExperimentConfig, classes: Dict[str, Dict[str, Any]],
                  run: str) -> None:
        """Raises ConfigError unless the export has the run's heads, classes and size."""
        where = f"--model {self.export.path}"
        if self.export.image_size != cfg.data.image_size:
            raise ConfigError(f"{where} takes {self.export.image_size} px frames but run {run} "
                              f"trains at {cfg.data.image_size} px: export that run again")
        for spec in cfg.head_configs:
            head = self.heads.get(spec.name)
            if head is None:
                raise ConfigError(f"{where} has no head {spec.name!r} of run {run} (it has "
                                  f"{', '.join(self.heads) or 'none'})")
            names: List[str] = list(classes[spec.name]["names"])
            if head.classes != names:
                raise ConfigError(f"{where}: head {spec.name!r} has classes "
                                  f"{head.classes[:5]}... but run {run} has {names[:5]}...")

    def outputs(self, images: Any, head: str) -> Dict[str, np.ndarray]:
        """One head's outputs for a uint8 `[B, S, S, 3]` batch, keys without the head name."""
        return self.heads_outputs(images, [head])[head]

    def heads_outputs(self, images: Any, heads: Sequence[str]) -> Dict[str, Dict[str, Any]]:
        """`{head: outputs}` of several heads from one run of the model (see `outputs`)."""
        values = self.backend.run(np.asarray(images, np.uint8))
        return {head: {key[len(head) + 1:]: value for key, value in values.items()
                       if key.startswith(f"{head}_")} for head in heads}


def detections(model: Any, images: Any, head: str, cfg: ExperimentConfig) -> Dict[str, Any]:
    """A detection head's NMS output for a letterboxed batch, from either kind of model.

    Args:
        model: the Keras detector or an `ExportRunner`.
        images: uint8 `[B, S, S, 3]` letterboxed frames.
        head: the detection head.
        cfg: the experiment config (its `eval` NMS settings, for the Keras model).

    Returns:
        `{"boxes", "scores", "classes", "num_detections"}` numpy arrays, boxes xyxy in
        frame pixels.
    """
    return heads_detections(model, images, [head], cfg)[head]


def heads_detections(model: Any, images: Any, heads: Sequence[str],
                     cfg: ExperimentConfig) -> Dict[str, Dict[str, Any]]:
    """`{head: detections}` of several detection heads from one forward pass (see
    `detections`)."""
    keys = ("boxes", "scores", "classes", "num_detections")
    if isinstance(model, ExportRunner):
        out = model.heads_outputs(images, heads)
    else:
        # pylint: disable=import-outside-toplevel  # TF-only module; Keras when needed
        from effdet_tf import nms_tf
        from train.compiled_call import inference
        out = nms_tf.postprocess(model, inference(model)(images),
                                 score_threshold=cfg.eval.score_threshold,
                                 iou_threshold=cfg.eval.iou_threshold,
                                 max_detections=cfg.eval.max_detections)
    return {head: {key: np.asarray(out[head][key]) for key in keys} for head in heads}


def probabilities(model: Any, images: Any, head: str) -> np.ndarray:
    """An image-level head's class or tag probabilities `[B, C]` float32."""
    if isinstance(model, ExportRunner):
        return np.asarray(model.outputs(images, head)["probabilities"], np.float32)
    from train.compiled_call import inference  # pylint: disable=import-outside-toplevel  # Keras
    out = model.task_heads[head].postprocess(inference(model)(images)[head])
    return np.asarray(out["probabilities"], np.float32)


def thresholds(model: Any, head: str) -> np.ndarray:
    """A multilabel head's per-tag decision thresholds `[T]` float32."""
    if isinstance(model, ExportRunner):
        saved = model.heads[head].thresholds
        if saved is None:
            raise ConfigError(f"{model.export.path}: preprocessing.json gives no thresholds "
                              f"for multilabel head {head!r}; export the run again")
        return np.asarray(saved, np.float32)
    return np.asarray(model.task_heads[head].thresholds.numpy(), np.float32)
