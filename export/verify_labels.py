"""The image-level heads' exported outputs, Keras vs SavedModel vs ONNX Runtime.

For every classification and multilabel head, on each image (each backend letterboxing
it on its own): the probabilities agree within `PROB_TOLERANCE`, and the discrete outputs
are equal, the top-k classes of a classification head and the thresholded tags of a
multilabel head, except where the reference itself is a tie (two probabilities, or a
probability and its tag's threshold, closer than the tolerance), which rounding may
break either way. Used by `export.verify`.
"""
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from data_pipelines.decode import letterbox

PROB_TOLERANCE = 1e-4
Check = Tuple[str, str, str, bool]  # (check, backend, value, ok), a row of the report


def label_heads(model: Any) -> Dict[str, str]:
    """`{head: kind}` of the model's image-level heads (those with a `logits` output)."""
    return {spec.name: spec.kind for spec in model.head_specs
            if spec.kind in ("classification", "multilabel")}


def keras_labels(model: Any, image: np.ndarray, image_size: int) -> Dict[str, Dict]:
    """The image-level heads' post-processed Keras outputs for one image (numpy)."""
    frame = letterbox(tf.constant(image), tf.shape(image)[:2], image_size)[0]
    outputs = model(tf.cast(frame, tf.float32)[None], training=False)
    return {head: {k: np.asarray(v) for k, v in
                   model.task_heads[head].postprocess(outputs[head]).items()}
            for head in label_heads(model)}


def _discrete_mismatches(kind: str, ref: Dict[str, np.ndarray], got: Dict[str, np.ndarray],
                         thresholds: np.ndarray) -> int:
    """Discrete outputs that differ where the reference is not a tie."""
    probs = ref["probabilities"][0]
    if kind == "classification":
        return sum(int(a != b and abs(float(probs[a]) - float(probs[b])) >= PROB_TOLERANCE)
                   for a, b in zip(ref["top_classes"][0], got["top_classes"][0]))
    near = np.abs(probs - thresholds) < PROB_TOLERANCE
    return int(np.sum((ref["tags"][0] != got["tags"][0]) & ~near))


def compare_labels(model: Any, image_size: int, images: Sequence[np.ndarray],
                   runners: Dict[str, Callable[[np.ndarray], Dict[str, np.ndarray]]]
                   ) -> List[Check]:
    """Report rows for every image-level head, image and backend.

    Args:
        model: the Keras model (the reference).
        image_size: its input side.
        images: uint8 `[H, W, 3]` arrays.
        runners: backend name -> a function of a uint8 `[1, H, W, 3]` batch giving the
            exported outputs (`<head>_probabilities`, `<head>_top_classes`, `<head>_tags`).

    Returns:
        `(check, backend, value, ok)` rows; none when the model has no image-level head.
    """
    heads = label_heads(model)
    rows: List[Check] = []
    if not heads:
        return rows
    for index, image in enumerate(images):
        ref = keras_labels(model, image, image_size)
        outputs = {name: run(image[None]) for name, run in runners.items()}
        for head, kind in heads.items():
            thresholds = (np.asarray(model.task_heads[head].thresholds.numpy(), np.float32)
                          if kind == "multilabel" else np.zeros(0, np.float32))
            keys = ("top_classes",) if kind == "classification" else ("tags",)
            for backend, out in outputs.items():
                got = {k: np.asarray(out[f"{head}_{k}"]) for k in ("probabilities",) + keys}
                diff = float(np.max(np.abs(got["probabilities"] - ref[head]["probabilities"])))
                wrong = _discrete_mismatches(kind, ref[head], got, thresholds)
                rows.append((f"{kind} {head} image {index} "
                             f"({image.shape[1]}x{image.shape[0]})", backend,
                             f"probabilities max |diff| {diff:.2e}, {keys[0]} differing {wrong}",
                             diff <= PROB_TOLERANCE and wrong == 0))
    return rows
