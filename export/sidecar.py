"""The files every export writes beside the model: `<head>_classes.txt` per head and
`preprocessing.json`, what a client must know to feed the model and read its outputs.

`preprocessing.json` holds the input the `serving_default` signature takes (uint8 RGB,
any size; letterboxing happens inside) and, for a client that feeds the `raw` signature
or another runtime, the exact letterbox (size, bilinear, rounding, centred padding with
114) and value range (0..255, scaled to 0..1 inside the model); then every head: its
kind, classes file, output names and, for multilabel heads, the per-tag thresholds.
"""
import json
import os
from typing import Any, Dict

from data_pipelines.decode import PAD_VALUE
from export.io import class_files

PREPROCESSING_FILE = "preprocessing.json"
OUTPUTS = {
    "detection": ("boxes", "scores", "classes", "class_names", "num_detections"),
    "classification": ("probabilities", "top_classes", "top_scores", "top_names"),
    "multilabel": ("probabilities", "tags"),
}


def preprocessing(graph: Any) -> Dict[str, Any]:
    """The contents of `preprocessing.json` for an `export.graph.DetectionGraph`."""
    size = graph.image_size
    heads = {}
    for spec in graph.model.head_specs:
        outputs = [f"{spec.name}_{key}" for key in OUTPUTS.get(spec.kind, ())
                   if graph.with_names or key not in ("class_names", "top_names")]
        entry: Dict[str, Any] = {"kind": spec.kind, "classes_file": f"{spec.name}_classes.txt",
                                 "num_classes": spec.num_classes, "outputs": outputs}
        if spec.kind == "multilabel":
            thresholds = graph.model.task_heads[spec.name].thresholds.numpy()
            entry["thresholds"] = [round(float(t), 6) for t in thresholds]
        heads[spec.name] = entry
    return {
        "input": {"signature": "serving_default", "name": "images", "dtype": "uint8",
                  "shape": [None, None, None, 3], "channels": "RGB",
                  "note": "any size, the same within a batch; letterboxed inside"},
        "letterbox": {"image_size": size, "keep_aspect_ratio": True,
                      "scale": f"min({size} / height, {size} / width)",
                      "resize": "bilinear to round(height * scale) x round(width * scale), "
                                "values rounded to integers",
                      "padding": f"centred, left = (S - new_width) // 2, top = "
                                 f"(S - new_height) // 2, value {PAD_VALUE}"},
        "raw_input": {"signature": "raw", "dtype": "float32", "shape": [None, size, size, 3],
                      "value_range": [0, 255], "note": "letterboxed frames; the model "
                                                       "divides by 255 inside"},
        "boxes": "xyxy pixels of the input image (letterbox undone inside)",
        "postprocessing": {"score_threshold": graph.score_threshold,
                           "iou_threshold": graph.iou_threshold,
                           "max_detections": graph.max_detections},
        "heads": heads,
    }


def sidecar_files(graph: Any, folder: str) -> Dict[str, str]:
    """`{path: text}` of the class files and `preprocessing.json` of an export in `folder`."""
    files = class_files(folder, graph.class_names)
    files[os.path.join(folder, PREPROCESSING_FILE)] = json.dumps(preprocessing(graph),
                                                                 indent=1) + "\n"
    return files
