"""Anchor matching and target encoding for detection heads (keras.ops, batched, any backend)."""
from typing import Any, Dict, Tuple

from keras import ops

from effdet_tf.box_coder import encode_boxes

MATCHED_THRESHOLD = 0.5
UNMATCHED_THRESHOLD = 0.5
TensorLike = Any  # a backend tensor, numpy array or KerasTensor


def pairwise_iou(anchors: TensorLike, boxes: TensorLike) -> TensorLike:
    """IoU of every anchor (or predicted box) with every box.

    Args:
        anchors: `[A, 4]` xyxy, the same for every image, or `[B, A, 4]` per image (e.g.
            the boxes a head predicts).
        boxes: `[B, M, 4]` xyxy.

    Returns:
        float32 `[B, A, M]`; zero where either box has no area.
    """
    anchors = ops.cast(anchors, "float32")
    if len(anchors.shape) == 2:
        anchors = anchors[None]
    anchors = anchors[:, :, None, :]                               # [1 or B, A, 1, 4]
    boxes = ops.cast(boxes, "float32")[:, None, :, :]              # [B, 1, M, 4]
    ix1 = ops.maximum(anchors[..., 0], boxes[..., 0])
    iy1 = ops.maximum(anchors[..., 1], boxes[..., 1])
    ix2 = ops.minimum(anchors[..., 2], boxes[..., 2])
    iy2 = ops.minimum(anchors[..., 3], boxes[..., 3])
    inter = ops.maximum(ix2 - ix1, 0.0) * ops.maximum(iy2 - iy1, 0.0)
    area_a = ops.maximum(anchors[..., 2] - anchors[..., 0], 0.0) * ops.maximum(
        anchors[..., 3] - anchors[..., 1], 0.0)
    area_b = ops.maximum(boxes[..., 2] - boxes[..., 0], 0.0) * ops.maximum(
        boxes[..., 3] - boxes[..., 1], 0.0)
    union = area_a + area_b - inter
    return ops.where(union > 0.0, inter / ops.maximum(union, 1e-8), 0.0)


def box_centres(boxes: TensorLike) -> Tuple[TensorLike, TensorLike]:
    """The centres `(x, y)` of xyxy boxes `[..., 4]`, each `[...]`."""
    return (boxes[..., 0] + boxes[..., 2]) * 0.5, (boxes[..., 1] + boxes[..., 3]) * 0.5


def centres_inside(anchors: TensorLike, boxes: TensorLike) -> TensorLike:
    """Whether each anchor's centre lies strictly inside each box.

    Args:
        anchors: float32 `[A, 4]` xyxy.
        boxes: float32 `[B, M, 4]` xyxy.

    Returns:
        bool `[B, A, M]`.
    """
    ax, ay = box_centres(anchors)
    ax, ay = ax[None, :, None], ay[None, :, None]
    return ops.logical_and(
        ops.logical_and(ax > boxes[:, None, :, 0], ax < boxes[:, None, :, 2]),
        ops.logical_and(ay > boxes[:, None, :, 1], ay < boxes[:, None, :, 3]))


def valid_box_mask(boxes: TensorLike, classes: TensorLike) -> TensorLike:
    """Marks the real (not padding, not degenerate) ground-truth boxes.

    Args:
        boxes: `[B, M, 4]` xyxy, `-1` padded.
        classes: `[B, M]` int, `-1` padded.

    Returns:
        bool `[B, M]`.
    """
    boxes = ops.cast(boxes, "float32")
    return ops.logical_and(
        ops.cast(classes, "int32") >= 0,
        ops.logical_and(boxes[..., 2] > boxes[..., 0], boxes[..., 3] > boxes[..., 1]))


def match_anchors(anchors: TensorLike, boxes: TensorLike, classes: TensorLike, *,
                  matched_threshold: float = MATCHED_THRESHOLD,
                  unmatched_threshold: float = UNMATCHED_THRESHOLD) -> Dict[str, object]:
    """Assigns every anchor to a ground-truth box, to background, or to ignore.

    IoU argmax per anchor: positive when its best IoU is `>= matched_threshold`,
    negative below `unmatched_threshold`, ignored in between. Forced matches: every
    real box also claims the anchor it overlaps most (when that IoU is above zero),
    whatever the thresholds. Padding rows (class `-1` or no area) never match.

    Args:
        anchors: `[A, 4]` xyxy pixels.
        boxes: `[B, M, 4]` xyxy pixels, `-1` padded.
        classes: `[B, M]` int, `-1` padded.
        matched_threshold: IoU at or above which an anchor is positive.
        unmatched_threshold: IoU below which an anchor is negative.

    Returns:
        Dict with `positive` (bool `[B, A]`), `ignore` (bool `[B, A]`), `matched_index`
        (int32 `[B, A]`, index into M, meaningful where positive), `matched_boxes`
        (float32 `[B, A, 4]`, the anchor itself where not positive), `matched_classes`
        (int32 `[B, A]`, `-1` where not positive), `num_positives` (float32 `[B]`).

    Example:
        >>> m = match_anchors(generate_anchors(128), boxes, classes)
        >>> m["positive"].shape
        (B, 3069)
    """
    boxes = ops.cast(boxes, "float32")
    classes = ops.cast(classes, "int32")
    anchors = ops.cast(anchors, "float32")
    valid = valid_box_mask(boxes, classes)                                  # [B, M]
    iou = pairwise_iou(anchors, boxes)                                      # [B, A, M]
    iou = ops.where(valid[:, None, :], iou, -1.0)
    best_iou = ops.max(iou, axis=2)                                         # [B, A]
    best_box = ops.cast(ops.argmax(iou, axis=2), "int32")                   # [B, A]

    is_forced, forced_box = forced_claims(iou, valid)
    matched_index = ops.where(is_forced, forced_box, best_box)
    positive = ops.logical_or(is_forced, best_iou >= matched_threshold)
    ignore = ops.logical_and(
        ops.logical_not(positive),
        ops.logical_and(best_iou >= unmatched_threshold, best_iou < matched_threshold))
    return match_result(anchors, boxes, classes, positive, ignore, matched_index)


def forced_claims(iou: TensorLike, valid: TensorLike):
    """Every real box claims the anchor it overlaps most (when that IoU is above zero).

    A segment max over (image, anchor) ids keeps this O(B * M) instead of a `[B, A, M]`
    one-hot; when two boxes claim one anchor, the later box wins.

    Args:
        iou: float32 `[B, A, M]`; the columns of padding boxes are never read as claims.
        valid: bool `[B, M]`, the real boxes (only they claim).

    Returns:
        `(is_forced, forced_box)`: bool `[B, A]`, and int32 `[B, A]` the claiming box
        (0 where none claims).
    """
    batch = ops.shape(iou)[0]
    num_anchors = iou.shape[1] if iou.shape[1] is not None else ops.shape(iou)[1]
    num_boxes = ops.shape(iou)[2]
    best_anchor = ops.cast(ops.argmax(iou, axis=1), "int32")                # [B, M]
    claims = ops.logical_and(valid, ops.max(iou, axis=1) > 0.0)             # [B, M]
    claim_ids = ops.where(claims, ops.arange(1, num_boxes + 1, dtype="int32")[None, :], 0)
    segments = ops.arange(batch, dtype="int32")[:, None] * num_anchors + best_anchor
    forced_box = ops.segment_max(ops.reshape(claim_ids, (-1,)), ops.reshape(segments, (-1,)),
                                 num_segments=batch * num_anchors)
    forced_box = ops.reshape(ops.maximum(forced_box, 0), (batch, num_anchors))  # 0: none
    return forced_box > 0, ops.maximum(forced_box - 1, 0)


def match_result(anchors: TensorLike, boxes: TensorLike, classes: TensorLike,
                 positive: TensorLike, ignore: TensorLike,
                 matched_index: TensorLike) -> Dict[str, object]:
    """The match dict every assigner returns (see `match_anchors`), from its decisions.

    Args:
        anchors: float32 `[A, 4]`.
        boxes: float32 `[B, M, 4]`.
        classes: int32 `[B, M]`.
        positive: bool `[B, A]`.
        ignore: bool `[B, A]`.
        matched_index: int32 `[B, A]`, the box of each positive anchor.

    Returns:
        The dict described in `match_anchors`.
    """
    matched_boxes = ops.take_along_axis(boxes, matched_index[..., None], axis=1)
    matched_boxes = ops.where(positive[..., None], matched_boxes, anchors[None])
    matched_classes = ops.take_along_axis(classes, matched_index, axis=1)
    matched_classes = ops.where(positive, matched_classes, -1)
    return {
        "positive": positive,
        "ignore": ignore,
        "matched_index": matched_index,
        "matched_boxes": matched_boxes,
        "matched_classes": matched_classes,
        "num_positives": ops.sum(ops.cast(positive, "float32"), axis=1),
    }


def encode_targets(anchors: TensorLike, match: Dict[str, object],
                   num_classes: int) -> Dict[str, object]:
    """Turns a match into class and box targets for one detection head.

    Args:
        anchors: `[A, 4]` xyxy pixels.
        match: the dict from `match_anchors`.
        num_classes: classes of the head; class indices outside `0..num_classes-1` give
            an all-zero row (they belong to another head's examples, which are masked).

    Returns:
        Dict with `class_targets` (float32 `[B, A, C]` one-hot, zero for background),
        `box_targets` (float32 `[B, A, 4]` deltas, zero where not positive),
        `positive`, `ignore` (bool `[B, A]`) and `num_positives` (float32 `[B]`).
    """
    positive = match["positive"]
    one_hot = ops.cast(
        ops.expand_dims(match["matched_classes"], -1) == ops.arange(num_classes)[None, None, :],
        "float32")
    deltas = encode_boxes(match["matched_boxes"], ops.cast(anchors, "float32")[None])
    box_targets = ops.where(positive[..., None], deltas, 0.0)
    return {
        "class_targets": one_hot,
        "box_targets": box_targets,
        "positive": positive,
        "ignore": match["ignore"],
        "num_positives": match["num_positives"],
    }
