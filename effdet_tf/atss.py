"""ATSS anchor assignment (Zhang et al. 2020, "Bridging the Gap Between Anchor-based and
Anchor-free Detection via Adaptive Training Sample Selection"), keras.ops, any backend.

For every ground-truth box: on each pyramid level, the anchors of the `top_k` locations
nearest the box centre are its candidates; its IoU threshold is the mean plus the
standard deviation of its candidates' IoUs; a candidate is positive for the box when its
IoU reaches that threshold and its centre lies inside the box. An anchor positive for
several boxes goes to the one it overlaps most. As in `effdet_tf.targets.match_anchors`,
every real box also claims the anchor it overlaps most, so no box is left without a
positive (a box smaller than the finest stride may contain no anchor centre). No anchor is
ignored: the rest are background.

Where the IoU-argmax rule of `match_anchors` uses one threshold (0.5) for every box,
ATSS adapts it to each box's statistics: a small box, whose best anchors overlap it
little, still gets a few positives on its best level, and a large one is not given
positives on every level.
"""
from typing import Any, Dict, Sequence

from keras import ops

from effdet_tf.anchors import NUM_ANCHORS_PER_LOCATION
from effdet_tf.targets import (box_centres, centres_inside, forced_claims, match_result,
                              pairwise_iou, valid_box_mask)

TOP_K = 9  # candidate locations per level and box: the paper's value (one anchor each there)
TensorLike = Any


def _candidates(distance: TensorLike, level_counts: Sequence[int], top_k: int) -> TensorLike:
    """bool `[B, A, M]`: the `top_k` nearest anchors of each level for each box.

    An anchor ties with the k-th nearest when its centre is as far: the anchors of one
    location share their centre, so all of them are in or out together (`top_k` a
    multiple of the anchors per location takes whole locations).
    """
    parts = []
    start = 0
    for count in level_counts:
        level = distance[:, start:start + count, :]                     # [B, n, M]
        k = min(top_k, count)
        nearest = ops.top_k(-ops.transpose(level, (0, 2, 1)), k, sorted=True)[0]  # [B, M, k]
        kth = -nearest[..., k - 1]                                         # [B, M]
        parts.append(level <= kth[:, None, :])
        start += count
    return ops.concatenate(parts, axis=1)


def atss_match(anchors: TensorLike, boxes: TensorLike, classes: TensorLike, *,
               level_counts: Sequence[int], top_k: int = TOP_K,
               anchors_per_location: int = NUM_ANCHORS_PER_LOCATION) -> Dict[str, object]:
    """Assigns every anchor to a ground-truth box or to background, by ATSS.

    Args:
        anchors: `[A, 4]` xyxy pixels, level by level (`effdet_tf.anchors` order).
        boxes: `[B, M, 4]` xyxy pixels, `-1` padded.
        classes: `[B, M]` int, `-1` padded.
        level_counts: anchors of each level, in order; they sum to `A`.
        top_k: candidate locations per level and box, by centre distance.
        anchors_per_location: anchors sharing each location's centre (consecutive).

    Returns:
        The dict of `effdet_tf.targets.match_anchors` (`ignore` is all False).

    Raises:
        ValueError: `level_counts` does not sum to the number of anchors.

    Example:
        >>> counts = [9 * s * s for s in level_shapes(128)]
        >>> m = atss_match(generate_anchors(128), boxes, classes, level_counts=counts)
    """
    boxes = ops.cast(boxes, "float32")
    classes = ops.cast(classes, "int32")
    anchors = ops.cast(anchors, "float32")
    if sum(level_counts) != anchors.shape[0]:
        raise ValueError(f"level_counts sum to {sum(level_counts)}, "
                         f"but there are {anchors.shape[0]} anchors")
    valid = valid_box_mask(boxes, classes)                                   # [B, M]
    iou = pairwise_iou(anchors, boxes)                                       # [B, A, M]
    ax, ay = box_centres(anchors)                                            # [A]
    bx, by = box_centres(boxes)                                              # [B, M]
    dx = ax[None, :, None] - bx[:, None, :]
    dy = ay[None, :, None] - by[:, None, :]
    candidate = ops.logical_and(_candidates(dx * dx + dy * dy, level_counts,
                                            top_k * anchors_per_location),
                                valid[:, None, :])                           # [B, A, M]

    weight = ops.cast(candidate, "float32")
    count = ops.maximum(ops.sum(weight, axis=1), 1.0)                        # [B, M]
    mean = ops.sum(iou * weight, axis=1) / count
    spread = ops.sum(ops.square(iou - mean[:, None, :]) * weight, axis=1)
    threshold = mean + ops.sqrt(spread / ops.maximum(count - 1.0, 1.0))      # unbiased std
    inside = centres_inside(anchors, boxes)
    chosen = ops.logical_and(ops.logical_and(candidate, inside),
                             iou >= threshold[:, None, :])                   # [B, A, M]
    score = ops.where(chosen, iou, -1.0)
    best_box = ops.cast(ops.argmax(score, axis=2), "int32")                  # [B, A]

    is_forced, forced_box = forced_claims(iou, valid)
    matched_index = ops.where(is_forced, forced_box, best_box)
    positive = ops.logical_or(is_forced, ops.any(chosen, axis=2))
    return match_result(anchors, boxes, classes, positive, ops.zeros_like(positive),
                        matched_index)
