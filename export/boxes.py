"""Box geometry shared by the export checks (`export.verify`, `export.verify_int8`)."""
import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two xyxy boxes (1 for two identical empty boxes)."""
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    if union <= 0:
        return 1.0 if np.allclose(a, b, atol=1e-3) else 0.0
    return float(inter / union)
