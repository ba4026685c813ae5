"""Detection losses (keras.ops, float32): focal, varifocal, Huber on deltas, CIoU."""
import math
from typing import Any

from keras import ops

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 1.5
HUBER_DELTA = 0.1
HUBER_WEIGHT = 50.0
CIOU_WEIGHT = 1.0
VARIFOCAL_ALPHA = 0.75
VARIFOCAL_GAMMA = 2.0
TensorLike = Any  # a backend tensor, numpy array or KerasTensor


def focal_loss(class_targets: TensorLike, class_logits: TensorLike, *, alpha: float = FOCAL_ALPHA,
               gamma: float = FOCAL_GAMMA) -> TensorLike:
    """Sigmoid focal loss per anchor and class (not reduced).

    `alpha_t * (1 - p_t)**gamma * BCE(logits, targets)`, as automl.

    Args:
        class_targets: `[..., C]` in `{0, 1}`.
        class_logits: `[..., C]` logits.
        alpha: weight of positives (negatives get `1 - alpha`).
        gamma: focusing exponent.

    Returns:
        float32 `[..., C]`.

    Example:
        >>> focal_loss(ops.ones((1,)), ops.zeros((1,)))  # 0.25 * 0.5**1.5 * log 2
    """
    y = ops.cast(class_targets, "float32")
    logits = ops.cast(class_logits, "float32")
    prob = ops.sigmoid(logits)
    bce = _bce_with_logits(y, logits)
    p_t = y * prob + (1.0 - y) * (1.0 - prob)
    alpha_t = y * alpha + (1.0 - y) * (1.0 - alpha)
    return alpha_t * ops.power(ops.maximum(1.0 - p_t, 0.0), gamma) * bce


def _bce_with_logits(y: TensorLike, logits: TensorLike) -> TensorLike:
    """Binary cross-entropy on logits, stable for any logit: `-(y log p + (1-y) log(1-p))`."""
    return ops.maximum(logits, 0.0) - logits * y + ops.log1p(ops.exp(-ops.abs(logits)))


def varifocal_loss(quality_targets: TensorLike, class_logits: TensorLike, *,
                   alpha: float = VARIFOCAL_ALPHA,
                   gamma: float = VARIFOCAL_GAMMA) -> TensorLike:
    """Varifocal loss per anchor and class (VarifocalNet, Zhang et al. 2021), not reduced.

    The class score learns the box's quality: a positive's target is the IoU `q` of its
    predicted box with its object (0 elsewhere). Positives (`q > 0`) weigh `q * BCE(p, q)`,
    so well-localised positives count most; negatives weigh `alpha * p**gamma * BCE(p, 0)`,
    down-weighting the easy ones as focal loss does, but only on the negative side.

    Args:
        quality_targets: `[..., C]` in `[0, 1]`: the IoU target on the object's class of
            positive anchors, 0 elsewhere.
        class_logits: `[..., C]` logits.
        alpha: weight of negatives.
        gamma: focusing exponent of negatives.

    Returns:
        float32 `[..., C]`.

    Example:
        >>> varifocal_loss(ops.zeros((1,)), ops.zeros((1,)))  # 0.75 * 0.5**2 * log 2
    """
    q = ops.cast(quality_targets, "float32")
    logits = ops.cast(class_logits, "float32")
    prob = ops.sigmoid(logits)
    positive = ops.cast(q > 0.0, "float32")
    weight = positive * q + (1.0 - positive) * alpha * ops.power(prob, gamma)
    return weight * _bce_with_logits(q, logits)


def huber_loss(box_targets: TensorLike, box_deltas: TensorLike, *,
               delta: float = HUBER_DELTA) -> TensorLike:
    """Huber loss per coordinate (not reduced).

    Args:
        box_targets: `[..., 4]` encoded deltas.
        box_deltas: `[..., 4]` predicted deltas.
        delta: switch point from quadratic to linear.

    Returns:
        float32 `[..., 4]`: `0.5 e**2` where `|e| <= delta`, else `delta (|e| - delta / 2)`.

    Example:
        >>> huber_loss(ops.zeros((4,)), ops.ones((4,)) * 0.05)  # 0.00125 each
    """
    err = ops.abs(ops.cast(box_targets, "float32") - ops.cast(box_deltas, "float32"))
    quadratic = ops.minimum(err, delta)
    return 0.5 * quadratic * quadratic + delta * (err - quadratic)


def paired_iou(boxes_a: TensorLike, boxes_b: TensorLike, *, eps: float = 1e-7) -> TensorLike:
    """IoU of each box in `boxes_a` with the box at the same index in `boxes_b`.

    Args:
        boxes_a: `[..., 4]` xyxy.
        boxes_b: `[..., 4]` xyxy, the same shape.
        eps: numerical guard.

    Returns:
        float32 `[...]` in `[0, 1]`.

    Example:
        >>> paired_iou(boxes, boxes)  # ones
    """
    return _iou_parts(boxes_a, boxes_b, eps)[0]


def _iou_parts(boxes_a: TensorLike, boxes_b: TensorLike, eps: float):
    """`(iou, widths_a, heights_a, widths_b, heights_b)` of paired xyxy boxes."""
    a = ops.cast(boxes_a, "float32")
    b = ops.cast(boxes_b, "float32")
    aw = ops.maximum(a[..., 2] - a[..., 0], 0.0)
    ah = ops.maximum(a[..., 3] - a[..., 1], 0.0)
    bw = ops.maximum(b[..., 2] - b[..., 0], 0.0)
    bh = ops.maximum(b[..., 3] - b[..., 1], 0.0)
    iw = ops.maximum(ops.minimum(a[..., 2], b[..., 2]) - ops.maximum(a[..., 0], b[..., 0]), 0.0)
    ih = ops.maximum(ops.minimum(a[..., 3], b[..., 3]) - ops.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter + eps), aw, ah, bw, bh


def ciou_loss(boxes_true: TensorLike, boxes_pred: TensorLike, *,
              eps: float = 1e-7) -> TensorLike:
    """Complete-IoU loss `1 - CIoU` per box pair (YOLOv4), not reduced.

    Args:
        boxes_true: `[..., 4]` xyxy.
        boxes_pred: `[..., 4]` xyxy.
        eps: numerical guard.

    Returns:
        float32 `[...]` in `[0, 3)`; 0 for identical boxes.

    Example:
        >>> ciou_loss(boxes, boxes)  # zeros
    """
    t = ops.cast(boxes_true, "float32")
    p = ops.cast(boxes_pred, "float32")
    iou, tw, th, pw, ph = _iou_parts(t, p, eps)
    cw = ops.maximum(t[..., 2], p[..., 2]) - ops.minimum(t[..., 0], p[..., 0])
    ch = ops.maximum(t[..., 3], p[..., 3]) - ops.minimum(t[..., 1], p[..., 1])
    diag = cw * cw + ch * ch + eps
    dcx = (p[..., 0] + p[..., 2] - t[..., 0] - t[..., 2]) * 0.5
    dcy = (p[..., 1] + p[..., 3] - t[..., 1] - t[..., 3]) * 0.5
    centre = dcx * dcx + dcy * dcy
    v = (4.0 / math.pi ** 2) * ops.square(
        ops.arctan(tw / (th + eps)) - ops.arctan(pw / (ph + eps)))
    alpha = ops.stop_gradient(v / (1.0 - iou + v + eps))
    return 1.0 - (iou - centre / diag - alpha * v)
