"""Task-aligned anchor assignment (Feng et al. 2021, "TOOD: Task-aligned One-stage Object
Detection"; the assigner of YOLOv8), keras.ops, any backend.

Where the IoU and ATSS rules pick an anchor for a box by the anchor's own shape, this one
asks the head being trained: for every ground-truth box and every anchor whose centre lies
inside it, the alignment `t = s ** alpha * u ** beta` multiplies the head's predicted
probability `s` of the box's class at that anchor by the IoU `u` of the anchor's predicted
box with the box. The `top_k` anchors of highest `t` are the box's positives. An anchor
chosen by several boxes goes to the one its predicted box overlaps most. As in
`effdet_tf.targets.match_anchors` and `effdet_tf.atss`, every real box also claims the
anchor (prior) it overlaps most, so a box with no anchor centre inside it (smaller than the
finest stride) still trains one anchor. No anchor is ignored.

At the first step the predicted boxes are the anchors themselves (deltas near zero) and
every class probability is the prior, so the rule starts as "the `top_k` anchors inside the
box that overlap it most" and moves to the anchors the head already scores and places
well. The predictions only select anchors: no gradient flows through the assignment.

Class targets stay one-hot (the focal loss of `effdet_tf.losses` as for the other rules);
TOOD and YOLOv8 also soften them to the normalised alignment, which is not done here.
`top_k`, `alpha` and `beta` are YOLOv8's values (10, 0.5, 6.0).
"""
from typing import Any, Dict

from keras import ops

from effdet_tf.box_coder import decode_boxes
from effdet_tf.targets import (centres_inside, forced_claims, match_result, pairwise_iou,
                              valid_box_mask)

TOP_K = 10
ALPHA = 0.5
BETA = 6.0
TensorLike = Any


def alignment(anchors: TensorLike, boxes: TensorLike, classes: TensorLike,
              class_logits: TensorLike, box_deltas: TensorLike, *, alpha: float = ALPHA,
              beta: float = BETA):
    """The alignment of every anchor with every box, and the IoUs it was made from.

    Args:
        anchors: float32 `[A, 4]` xyxy pixels.
        boxes: float32 `[B, M, 4]` xyxy pixels, `-1` padded.
        classes: int32 `[B, M]`, `-1` padded.
        class_logits: `[B, A, C]` the head's logits.
        box_deltas: `[B, A, 4]` the head's deltas (`effdet_tf.box_coder` encoding).
        alpha: exponent of the class probability.
        beta: exponent of the IoU.

    Returns:
        `(metric, overlap)`: float32 `[B, A, M]` the alignment, zero where the anchor's
        centre is outside the box or the box is padding; float32 `[B, A, M]` the IoU of
        each anchor's predicted box with each box.
    """
    logits = ops.stop_gradient(ops.cast(class_logits, "float32"))
    deltas = ops.stop_gradient(ops.cast(box_deltas, "float32"))
    overlap = pairwise_iou(decode_boxes(deltas, anchors[None]), boxes)          # [B, A, M]
    num_classes = logits.shape[-1]
    batch, num_anchors = ops.shape(logits)[0], ops.shape(logits)[1]
    class_index = ops.clip(classes, 0, num_classes - 1)  # other heads' classes: masked later
    class_index = ops.broadcast_to(class_index[:, None, :],
                                   (batch, num_anchors, ops.shape(classes)[1]))
    score = ops.take_along_axis(ops.sigmoid(logits), class_index, axis=2)      # [B, A, M]
    inside = ops.logical_and(centres_inside(anchors, boxes),
                             valid_box_mask(boxes, classes)[:, None, :])
    metric = ops.power(score, alpha) * ops.power(overlap, beta)
    return ops.where(inside, metric, 0.0), overlap


def tal_match(anchors: TensorLike, boxes: TensorLike, classes: TensorLike,
              class_logits: TensorLike, box_deltas: TensorLike, *, top_k: int = TOP_K,
              alpha: float = ALPHA, beta: float = BETA) -> Dict[str, object]:
    """Assigns every anchor to a ground-truth box or to background, by task alignment.

    Args:
        anchors: `[A, 4]` xyxy pixels.
        boxes: `[B, M, 4]` xyxy pixels, `-1` padded.
        classes: `[B, M]` int, `-1` padded; a class outside the head's `C` (another head's
            example, masked out of this head's loss) is read as class `C - 1`.
        class_logits: `[B, A, C]` the head's class logits for the batch.
        box_deltas: `[B, A, 4]` the head's box deltas for the batch.
        top_k: positives per box (fewer when fewer anchors inside it align above zero;
            anchors tied with the k-th are in too).
        alpha: exponent of the class probability in the alignment.
        beta: exponent of the predicted box's IoU in the alignment.

    Returns:
        The dict of `effdet_tf.targets.match_anchors` (`ignore` is all False).

    Example:
        >>> out = head(features)
        >>> m = tal_match(head.anchors, boxes, classes, out["class_logits"], out["box_deltas"])
    """
    boxes = ops.cast(boxes, "float32")
    classes = ops.cast(classes, "int32")
    anchors = ops.cast(anchors, "float32")
    valid = valid_box_mask(boxes, classes)                                     # [B, M]
    metric, overlap = alignment(anchors, boxes, classes, class_logits, box_deltas,
                                alpha=alpha, beta=beta)
    k = min(top_k, anchors.shape[0])
    kth = ops.top_k(ops.transpose(metric, (0, 2, 1)), k, sorted=True)[0][..., k - 1]  # [B, M]
    # metric > 0 only inside a real box
    chosen = ops.logical_and(metric > 0.0, metric >= kth[:, None, :])          # [B, A, M]
    best_box = ops.cast(ops.argmax(ops.where(chosen, overlap, -1.0), axis=2), "int32")

    is_forced, forced_box = forced_claims(pairwise_iou(anchors, boxes), valid)
    matched_index = ops.where(is_forced, forced_box, best_box)
    positive = ops.logical_or(is_forced, ops.any(chosen, axis=2))
    return match_result(anchors, boxes, classes, positive, ops.zeros_like(positive),
                        matched_index)
