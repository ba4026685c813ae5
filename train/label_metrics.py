"""Metrics of image-level label heads: softmax classification and sigmoid multi-label.

Pure numpy (no TensorFlow): every function takes the head's probabilities as arrays and
returns JSON-ready results (python floats, ints, lists and dicts). The AP of a single
class or tag without a positive is `None` (not NaN), so that `json.dumps` writes strict
JSON for the common case of a class absent from a split. An aggregate (a mean over
classes or tags) is always a float: NaN only when no class or tag qualifies at all.

Multi-label inputs carry a `mask` `[N, T]`: an entry counts only where `mask == 1` (the
tag's label is known for that image); masked entries are ignored everywhere.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

THRESHOLD_RANGE = (0.01, 0.99)


def _ranked_counts(scores: np.ndarray,
                   positives: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(true positives, predictions, thresholds)` at each distinct score, descending."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    positives = np.asarray(positives).reshape(-1) != 0
    if scores.shape != positives.shape:
        raise ValueError(f"scores {scores.shape} and positives {positives.shape} differ")
    order = np.argsort(-scores, kind="stable")
    ranked, truth = scores[order], positives[order]
    # The last rank of each run of tied scores: tied scores form one threshold.
    last = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1].astype(np.int64)
    last = last[last >= 0]
    return np.cumsum(truth)[last].astype(np.float64), last + 1.0, ranked[last]


def precision_recall_curve(scores: np.ndarray,
                           positives: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall at every distinct score used as a threshold (`score >= t`).

    Tied scores form one threshold, as in sklearn's `precision_recall_curve`.

    Args:
        scores: `[N]` scores, higher = more positive.
        positives: `[N]` truth, nonzero = positive.

    Returns:
        `(precision, recall, thresholds)`, each `[M]`, thresholds descending (recall
        ascending); recall is NaN when there is no positive; all empty when N == 0.
    """
    tps, predicted, thresholds = _ranked_counts(scores, positives)
    total = tps[-1] if tps.size else 0.0
    recall = tps / total if total > 0 else np.full_like(tps, np.nan)
    return tps / np.maximum(predicted, 1.0), recall, thresholds


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Non-interpolated average precision, sum over thresholds of `(R_n - R_n-1) * P_n`.

    The definition of sklearn's `average_precision_score`: thresholds are the distinct
    scores in descending order, tied scores forming a single threshold.

    Args:
        scores: `[N]` scores.
        positives: `[N]` truth, nonzero = positive.

    Returns:
        The AP, NaN when there is no positive.
    """
    precision, recall, _ = precision_recall_curve(scores, positives)
    if not recall.size or not np.isfinite(recall[-1]):
        return float("nan")
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _f1(precision: float, recall: float) -> float:
    """Harmonic mean, 0 where both are 0."""
    total = precision + recall
    return 2.0 * precision * recall / total if total > 0 else 0.0


def _ratio(numerator: float, denominator: float) -> float:
    """`numerator / denominator` as a float, 0 when the denominator is 0."""
    return float(numerator) / float(denominator) if denominator > 0 else 0.0


def _json_ap(value: float) -> Optional[float]:
    """An AP as a float, None when undefined (NaN)."""
    return None if np.isnan(value) else float(value)


def _mean(values: Sequence[float]) -> float:
    """Mean of `values` as a float, NaN when there are none."""
    return float(np.mean(values)) if len(values) else float("nan")


def classification_metrics(probs: np.ndarray, labels: np.ndarray,
                           class_names: Sequence[str]) -> Dict[str, Any]:
    """Metrics of a softmax head: one true class per image, prediction = argmax.

    Args:
        probs: `[N, C]` class probabilities.
        labels: `[N]` true class indices in `0..C-1`.
        class_names: the C class names.

    Returns:
        JSON-ready dict (rates NaN when N == 0): `num_images`, `accuracy`,
        `top2_accuracy` (top-k, k = min(2, C)), `balanced_accuracy` (mean recall over
        classes with support), `macro_f1` (mean F1 over classes with support or
        predictions), `mAP` (mean one-vs-rest AP over classes with support), `per_class`
        (name -> `precision`, `recall`, `f1`, `ap` (None without support), `support`) and
        `confusion` (`[C][C]` ints, row = true class, column = predicted class).
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if probs.ndim != 2 or probs.shape[0] != labels.size:
        raise ValueError(f"need probs [N, C] with N = len(labels), got {probs.shape} and "
                         f"{labels.size} labels")
    num, classes = probs.shape
    if len(class_names) != classes:
        raise ValueError(f"{len(class_names)} class names for {classes} columns")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"labels must lie in 0..{classes - 1}")
    predicted = np.argmax(probs, axis=1)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    k = min(2, classes)
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    support, predicted_count = confusion.sum(axis=1), confusion.sum(axis=0)
    per_class, recalls, f1s, aps = {}, [], [], []
    for c, name in enumerate(class_names):
        true_pos = confusion[c, c]
        precision = _ratio(true_pos, predicted_count[c])
        recall = _ratio(true_pos, support[c])
        f1 = _f1(precision, recall)
        ap = average_precision(probs[:, c], labels == c)
        if support[c] > 0:
            recalls.append(recall)
            aps.append(ap)
        if support[c] > 0 or predicted_count[c] > 0:
            f1s.append(f1)
        per_class[str(name)] = {"precision": precision, "recall": recall, "f1": f1,
                                "ap": _json_ap(ap), "support": int(support[c])}
    return {
        "num_images": int(num),
        "accuracy": _mean(predicted == labels),
        "top2_accuracy": _mean(np.any(top == labels[:, None], axis=1)),
        "balanced_accuracy": _mean(recalls),
        "macro_f1": _mean(f1s),
        "mAP": _mean(aps),
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


def _multilabel_arrays(probs: np.ndarray, labels: np.ndarray,
                       mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated `(probs float64, positives bool, known bool)`, each `[N, T]`."""
    probs = np.asarray(probs, dtype=np.float64)
    labels, mask = np.asarray(labels), np.asarray(mask)
    if probs.ndim != 2 or labels.shape != probs.shape or mask.shape != probs.shape:
        raise ValueError(f"probs, labels and mask must all be [N, T], got {probs.shape}, "
                         f"{labels.shape} and {mask.shape}")
    return probs, labels >= 0.5, mask == 1


def best_f1_thresholds(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray,
                       default: float = 0.5) -> np.ndarray:
    """Per-tag thresholds that maximise each tag's F1 on (validation) data.

    Only known entries (`mask == 1`) count; a prediction is positive when
    `prob >= threshold`. The candidates are the tag's distinct known scores. At the best
    one, the threshold is placed halfway between it and the next lower known score (0
    below the lowest), so that it generalises, then clipped to [0.01, 0.99].

    Tie rule: when several candidates reach the best F1 (within 1e-12), the highest
    score wins, i.e. the fewest positive predictions (the higher precision).

    Args:
        probs: `[N, T]` sigmoid probabilities.
        labels: `[N, T]` truth, >= 0.5 = positive.
        mask: `[N, T]`, 1 where the label is known.
        default: the threshold of a tag without a known positive.

    Returns:
        float32 `[T]` thresholds.
    """
    probs, positives, known = _multilabel_arrays(probs, labels, mask)
    thresholds = np.full(probs.shape[1], default, dtype=np.float32)
    for t in range(probs.shape[1]):
        scores, truth = probs[known[:, t], t], positives[known[:, t], t]
        num_pos = int(truth.sum())
        if num_pos == 0:
            continue
        tps, predicted, candidates = _ranked_counts(scores, truth)
        f1 = 2.0 * tps / (predicted + num_pos)  # 2TP / (2TP + FP + FN)
        best = int(np.flatnonzero(f1 >= f1.max() - 1e-12)[0])
        lower = candidates[best + 1] if best + 1 < candidates.size else 0.0
        thresholds[t] = np.clip(0.5 * (candidates[best] + lower), *THRESHOLD_RANGE)
    return thresholds


def multilabel_metrics(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray,
                       thresholds: np.ndarray, tag_names: Sequence[str]) -> Dict[str, Any]:
    """Metrics of a sigmoid multi-label head at per-tag thresholds (`prob >= threshold`).

    Args:
        probs: `[N, T]` probabilities.
        labels: `[N, T]` truth, >= 0.5 = positive.
        mask: `[N, T]`, 1 where the label is known; other entries are ignored.
        thresholds: `[T]` decision thresholds (or a scalar).
        tag_names: the T tag names.

    Returns:
        JSON-ready dict: `num_images`, `micro_precision`, `micro_recall`, `micro_f1`
        (TP/FP/FN pooled over all tags), `macro_f1` and `mAP` (means over tags with a
        known positive; NaN when there is none) and `per_tag` (name -> `precision`, `recall`,
        `f1`, `ap` (None without a known positive), `support` (known positives), `known`
        (known entries), `threshold`).
    """
    probs, positives, known = _multilabel_arrays(probs, labels, mask)
    tags = probs.shape[1]
    if len(tag_names) != tags:
        raise ValueError(f"{len(tag_names)} tag names for {tags} columns")
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (tags,))
    predicted = probs >= thresholds[None, :]
    true_pos = np.sum(predicted & positives & known, axis=0)
    false_pos = np.sum(predicted & ~positives & known, axis=0)
    false_neg = np.sum(~predicted & positives & known, axis=0)
    per_tag, f1s, aps = {}, [], []
    for t, name in enumerate(tag_names):
        precision = _ratio(true_pos[t], true_pos[t] + false_pos[t])
        recall = _ratio(true_pos[t], true_pos[t] + false_neg[t])
        f1 = _f1(precision, recall)
        ap = average_precision(probs[known[:, t], t], positives[known[:, t], t])
        support = int(np.sum(positives[:, t] & known[:, t]))
        if support > 0:
            f1s.append(f1)
            aps.append(ap)
        per_tag[str(name)] = {"precision": precision, "recall": recall, "f1": f1,
                              "ap": _json_ap(ap), "support": support,
                              "known": int(known[:, t].sum()),
                              "threshold": float(thresholds[t])}
    micro_precision = _ratio(true_pos.sum(), true_pos.sum() + false_pos.sum())
    micro_recall = _ratio(true_pos.sum(), true_pos.sum() + false_neg.sum())
    return {
        "num_images": int(probs.shape[0]),
        "micro_precision": micro_precision,
        "micro_recall": micro_recall,
        "micro_f1": _f1(micro_precision, micro_recall),
        "macro_f1": _mean(f1s),
        "mAP": _mean(aps),
        "per_tag": per_tag,
    }


def prior_scores(train_counts: np.ndarray, train_known: Optional[np.ndarray],
                 num_images: int, kind: str) -> np.ndarray:
    """Scores of the trivial baseline that ignores the image: the training prior.

    Args:
        train_counts: `[C]` training images per class ("classification") or known
            positives per tag ("multilabel").
        train_known: `[C]` known training entries per tag ("multilabel"); unused (may be
            None) for "classification".
        num_images: rows to return.
        kind: "classification" (every row = counts / total, so argmax is the majority
            class) or "multilabel" (every row = positives / known, 0 where none known).

    Returns:
        float32 `[num_images, C]`.
    """
    counts = np.asarray(train_counts, dtype=np.float64).reshape(-1)
    if kind == "classification":
        total = counts.sum()
        if total <= 0:
            raise ValueError("classification prior needs a positive total count")
        prior = counts / total
    elif kind == "multilabel":
        if train_known is None:
            raise ValueError("multilabel prior needs train_known")
        known = np.asarray(train_known, dtype=np.float64).reshape(-1)
        if known.shape != counts.shape:
            raise ValueError(f"train_known {known.shape} and counts {counts.shape} differ")
        prior = np.divide(counts, known, out=np.zeros_like(counts), where=known > 0)
    else:
        raise ValueError(f"kind must be 'classification' or 'multilabel', got {kind!r}")
    return np.tile(prior.astype(np.float32), (int(num_images), 1))
