"""Tests of the label-head metrics and plots (train.label_metrics, train.label_plots)."""
import json
import math

import numpy as np
import pytest
from PIL import Image

from train import label_metrics, label_plots

NAMES = ["a", "b", "c"]
# Predictions (argmax) [0, 1, 1, 1, 2, 0] for labels [0, 0, 1, 2, 2, 1].
PROBS = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.8, 0.1],
                  [0.25, 0.4, 0.35], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
LABELS = np.array([0, 0, 1, 2, 2, 1])


def test_average_precision_hand_example():
    """Positives at ranks 1 and 3: AP = (1 + 2/3) / 2."""
    ap = label_metrics.average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0]))
    assert ap == pytest.approx((1.0 + 2.0 / 3.0) / 2.0)


def test_average_precision_ties_form_one_threshold():
    """A positive tied with two negatives counts with all of them, in any input order."""
    for scores, positives in (([0.9, 0.5, 0.5], [0, 1, 0]), ([0.5, 0.5, 0.9], [1, 0, 0]),
                              ([0.5, 0.9, 0.5], [0, 0, 1])):
        # One threshold at 0.5: TP 1 of 3 predictions, recall 0 -> 1.
        assert label_metrics.average_precision(np.array(scores),
                                               np.array(positives)) == pytest.approx(1 / 3)
    # Two tied items, one positive: precision 1/2 (a stable sort would say 1).
    assert label_metrics.average_precision(np.array([0.8, 0.8]),
                                           np.array([1, 0])) == pytest.approx(0.5)


def test_average_precision_without_positive_is_nan():
    """No positive: AP undefined."""
    assert math.isnan(label_metrics.average_precision(np.array([0.9, 0.1]), np.array([0, 0])))
    assert math.isnan(label_metrics.average_precision(np.zeros(0), np.zeros(0)))


def test_classification_metrics_hand_example():
    """3 of 6 right; every class has support 2 and recall 1/2."""
    result = label_metrics.classification_metrics(PROBS, LABELS, NAMES)
    assert result["num_images"] == 6
    assert result["accuracy"] == pytest.approx(0.5)
    assert result["top2_accuracy"] == pytest.approx(5 / 6)  # image 1 misses its top 2
    assert result["balanced_accuracy"] == pytest.approx(0.5)
    assert result["confusion"] == [[1, 1, 0], [1, 1, 0], [0, 1, 1]]
    per_class = result["per_class"]
    assert [per_class[n]["precision"] for n in NAMES] == pytest.approx([1 / 2, 1 / 3, 1.0])
    assert [per_class[n]["recall"] for n in NAMES] == pytest.approx([0.5, 0.5, 0.5])
    assert [per_class[n]["support"] for n in NAMES] == [2, 2, 2]
    # F1: a 0.5, b 2(1/3)(1/2)/(5/6) = 0.4, c 2(1)(1/2)/(3/2) = 2/3.
    assert [per_class[n]["f1"] for n in NAMES] == pytest.approx([0.5, 0.4, 2 / 3])
    assert result["macro_f1"] == pytest.approx((0.5 + 0.4 + 2 / 3) / 3)
    # Class a ranked 0.7+, 0.6-, 0.25-, 0.2+: AP = 0.5 * 1 + 0.5 * 2/4.
    assert per_class["a"]["ap"] == pytest.approx(0.75)
    json.dumps(result, allow_nan=False)


def test_absent_class_left_out_of_balanced_accuracy_and_map():
    """Class c has no support: out of balanced accuracy and mAP, in macro F1 (predicted)."""
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.2, 0.7], [0.2, 0.7, 0.1], [0.1, 0.6, 0.3]])
    result = label_metrics.classification_metrics(probs, np.array([0, 0, 1, 1]), NAMES)
    assert result["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    # AP a: 0.8+, 0.2-, {0.1+, 0.1-} -> 0.5 + 0.5 * 2/4; AP b = 1.
    assert result["mAP"] == pytest.approx((0.75 + 1.0) / 2)
    assert result["per_class"]["c"]["ap"] is None
    assert result["per_class"]["c"]["support"] == 0
    # F1: a (P 1, R 1/2) 2/3, b 1, c predicted once wrongly: 0.
    assert result["macro_f1"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    json.dumps(result, allow_nan=False)


def test_precision_zero_when_class_never_predicted():
    """Always predicting a: b and c get precision 0 and F1 0."""
    probs = np.tile([0.6, 0.3, 0.1], (3, 1))
    result = label_metrics.classification_metrics(probs, np.array([0, 1, 2]), NAMES)
    assert result["per_class"]["b"]["precision"] == 0.0
    assert result["per_class"]["b"]["f1"] == 0.0
    assert result["per_class"]["a"]["precision"] == pytest.approx(1 / 3)
    assert result["top2_accuracy"] == pytest.approx(2 / 3)


def _separable():
    """Tag 0: positives 0.9, 0.8, 0.7 and negatives 0.4, 0.3, 0.1; tag 1: no positive."""
    probs = np.array([[0.9, 0.2], [0.8, 0.3], [0.7, 0.9], [0.4, 0.1], [0.3, 0.5], [0.1, 0.2],
                      [0.35, 0.6]])
    labels = np.array([[1, 0], [1, 0], [1, 0], [0, 0], [0, 0], [0, 0], [1, 1]], np.float32)
    mask = np.ones_like(labels)
    mask[6] = 0  # a "positive" scored 0.35 whose label is unknown
    return probs, labels, mask


def test_best_f1_thresholds_separates_and_ignores_masked():
    """Midpoint of 0.7 (lowest positive) and 0.4 (highest negative); the masked row is out."""
    probs, labels, mask = _separable()
    thresholds = label_metrics.best_f1_thresholds(probs, labels, mask, default=0.42)
    assert thresholds.dtype == np.float32
    assert thresholds == pytest.approx([0.55, 0.42])
    result = label_metrics.multilabel_metrics(probs, labels, mask, thresholds, ["x", "y"])
    assert result["per_tag"]["x"]["f1"] == pytest.approx(1.0)
    # Counted, the 0.35 positive would move the best F1 to 8/9 at 0.35 (midpoint 0.325).
    unmasked = label_metrics.best_f1_thresholds(probs, labels, np.ones_like(mask))
    assert unmasked[0] == pytest.approx(0.325)


def test_best_f1_thresholds_tie_and_lowest_score():
    """Equal F1 (2/3 at 0.9 and at 0.6): the higher wins; best at the lowest: half of it."""
    probs = np.array([[0.9, 0.6], [0.8, 0.4], [0.7, 0.3], [0.6, 0.2], [0.5, 0.1]])
    labels = np.array([[1, 1], [0, 1], [0, 0], [1, 0], [0, 0]], np.float32)
    mask = np.array([[1, 1], [1, 1], [1, 0], [1, 0], [1, 0]], np.float32)
    thresholds = label_metrics.best_f1_thresholds(probs, labels, mask)
    assert thresholds == pytest.approx([0.85, 0.2])


def test_multilabel_metrics_ignore_masked_entries():
    """Changing a masked label or score changes nothing."""
    rng = np.random.default_rng(3)
    probs = rng.random((40, 5))
    labels = (rng.random((40, 5)) < 0.4).astype(np.float32)
    mask = (rng.random((40, 5)) < 0.7).astype(np.float32)
    thresholds = label_metrics.best_f1_thresholds(probs, labels, mask)
    names = [f"t{i}" for i in range(5)]
    before = label_metrics.multilabel_metrics(probs, labels, mask, thresholds, names)
    hidden = mask == 0
    labels2, probs2 = labels.copy(), probs.copy()
    labels2[hidden] = 1.0 - labels2[hidden]
    probs2[hidden] = 1.0 - probs2[hidden]
    assert label_metrics.best_f1_thresholds(probs2, labels2, mask) == pytest.approx(thresholds)
    after = label_metrics.multilabel_metrics(probs2, labels2, mask, thresholds, names)
    assert after == before
    assert before["per_tag"]["t0"]["known"] == int(mask[:, 0].sum())
    json.dumps(before, allow_nan=False)


def test_multilabel_micro_vs_macro():
    """Tag A perfect (TP 4), tag B TP 0 FP 2 FN 1: micro 8/11, macro 1/2."""
    probs = np.array([[0.9, 0.1], [0.9, 0.9], [0.9, 0.9], [0.9, 0.2]])
    labels = np.array([[1, 1], [1, 0], [1, 0], [1, 0]], np.float32)
    result = label_metrics.multilabel_metrics(probs, labels, np.ones_like(labels),
                                              np.array([0.5, 0.5]), ["A", "B"])
    assert result["micro_precision"] == pytest.approx(4 / 6)
    assert result["micro_recall"] == pytest.approx(4 / 5)
    assert result["micro_f1"] == pytest.approx(8 / 11)
    assert result["macro_f1"] == pytest.approx(0.5)
    # AP B: its positive is ranked last of 4 (after a tie of two at 0.9).
    assert result["mAP"] == pytest.approx((1.0 + 0.25) / 2)
    assert result["per_tag"]["B"]["support"] == 1
    assert result["per_tag"]["B"]["threshold"] == pytest.approx(0.5)


def test_aggregates_nan_when_nothing_qualifies():
    """No known positive (or no image): the means are NaN floats, the counts still hold."""
    probs = np.array([[0.2, 0.7], [0.9, 0.1]])
    labels = np.array([[0, 1], [0, 0]], np.float32)
    mask = np.array([[1, 0], [1, 1]], np.float32)  # tag 1's only positive is unknown
    result = label_metrics.multilabel_metrics(probs, labels, mask, np.array([0.5, 0.5]),
                                              ["A", "B"])
    assert math.isnan(result["mAP"]) and math.isnan(result["macro_f1"])
    assert result["micro_precision"] == 0.0 and result["per_tag"]["B"]["known"] == 1
    assert result["per_tag"]["A"]["ap"] is None
    empty = label_metrics.classification_metrics(np.zeros((0, 3)), np.zeros(0, int), NAMES)
    assert empty["num_images"] == 0 and math.isnan(empty["accuracy"])
    assert empty["confusion"] == [[0] * 3] * 3


def test_prior_scores_both_kinds():
    """Class prior = counts / total; tag prevalence = positives / known, 0 when none known."""
    scores = label_metrics.prior_scores(np.array([6, 3, 1]), None, 4, "classification")
    assert scores.shape == (4, 3) and scores.dtype == np.float32
    assert scores == pytest.approx(np.tile([0.6, 0.3, 0.1], (4, 1)))
    tags = label_metrics.prior_scores(np.array([2, 0, 5]), np.array([4, 0, 10]), 2,
                                      "multilabel")
    assert tags == pytest.approx(np.tile([0.5, 0.0, 0.5], (2, 1)))
    with pytest.raises(ValueError):
        label_metrics.prior_scores(np.array([1]), None, 1, "detection")


def test_prior_baseline_accuracy_is_majority_share():
    """The prior always predicts the training majority: accuracy = that class's share."""
    labels = np.array([0, 0, 0, 1, 2, 1, 0])
    scores = label_metrics.prior_scores(np.array([6, 3, 1]), None, labels.size,
                                        "classification")
    result = label_metrics.classification_metrics(scores, labels, NAMES)
    assert result["accuracy"] == pytest.approx(4 / 7)
    assert result["balanced_accuracy"] == pytest.approx(1 / 3)


def _png_size(path):
    """Size of the PNG at `path`, after checking that it is a non-empty PNG."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_classification_plots(tmp_path):
    """Confusion and class PR plots of 10 classes: readable-size PNGs in a new folder."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 200)
    logits = rng.normal(size=(200, 10))
    logits[np.arange(200), labels] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    names = [f"class_{i}" for i in range(10)]
    confusion = label_metrics.classification_metrics(probs, labels, names)["confusion"]
    for path in (label_plots.plot_confusion(confusion, names, str(tmp_path / "new" / "cm.png"),
                                            "confusion"),
                 label_plots.plot_class_pr_curves(probs, labels, names,
                                                  str(tmp_path / "pr.png"), "PR")):
        width, height = _png_size(path)
        assert width > 400 and height > 300


def test_multilabel_pr_plot(tmp_path):
    """PR grid of 33 tags (one without a known positive): a readable-size PNG."""
    rng = np.random.default_rng(1)
    labels = (rng.random((120, 33)) < 0.3).astype(np.float32)
    labels[:, 5] = 0.0
    probs = np.clip(0.5 * labels + 0.6 * rng.random((120, 33)), 0.0, 1.0)
    mask = (rng.random((120, 33)) < 0.8).astype(np.float32)
    thresholds = label_metrics.best_f1_thresholds(probs, labels, mask)
    path = label_plots.plot_pr_curves(probs, labels, mask, [f"tag_{i}" for i in range(33)],
                                      thresholds, str(tmp_path / "tags.png"), "tags")
    assert path == str(tmp_path / "tags.png")
    width, height = _png_size(path)
    assert width > 400 and height > 300
