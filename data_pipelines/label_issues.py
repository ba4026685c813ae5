"""Likely wrong labels (cleanlab), from a trained run's probabilities on the training split.

Classification: `cleanlab.filter.find_label_issues` on the images with a known class,
ranked by self-confidence (the probability the model gives the label as written); the
suggested label is the model's top class. Multi-label: each tag on its own, over the
images where that tag is known (a missing value is never called wrong), as a binary
`find_label_issues`; one row per image and tag.

The probabilities are the run's own on images it trained on (not out-of-sample), so a
model that memorised its training set finds fewer issues than cross-validated ones would;
a clearly wrong label still stands out when the model has learnt the task. Label issues
go to `exclude.txt` only when asked (`--exclude-label-issues`): how far to trust them
depends on the model.
"""
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from data_pipelines.exclude import path_key
from data_pipelines.inspect_catalog import Catalog, issue_row

MIN_TAG_EXAMPLES = 5  # known positives and negatives a tag needs to be checked


def _rows_by_path(catalog: Catalog) -> Dict[str, int]:
    return {path_key(p): r for r, p in enumerate(catalog.images["path"])}


def classification_issues(probs: np.ndarray, labels: np.ndarray) -> List[int]:
    """Indices of likely wrong labels, worst first (cleanlab, self-confidence ranking).

    Args:
        probs: float `[N, C]` predicted probabilities (rows sum to 1).
        labels: int `[N]` given classes.

    Returns:
        Row indices into `labels`.
    """
    from cleanlab.filter import find_label_issues  # pylint: disable=import-outside-toplevel

    if len(labels) < 2 or len(np.unique(labels)) < 2:
        return []
    probs = np.clip(np.asarray(probs, np.float64), 1e-7, None)
    probs /= probs.sum(axis=1, keepdims=True)
    return [int(i) for i in find_label_issues(np.asarray(labels, int), probs,
                                              return_indices_ranked_by="self_confidence")]


def tag_issues(probs: np.ndarray, values: np.ndarray) -> List[int]:
    """Indices of likely wrong 0/1 values of one tag, worst first.

    Args:
        probs: float `[N]` predicted probability of the tag.
        values: int `[N]` given values (known ones only).

    Returns:
        Row indices into `values` (none when a value has under `MIN_TAG_EXAMPLES`).
    """
    counts = np.bincount(np.asarray(values, int), minlength=2)
    if counts.min() < MIN_TAG_EXAMPLES:
        return []
    probs = np.asarray(probs, np.float64)
    return classification_issues(np.stack([1 - probs, probs], axis=1), values)


def label_issue_rows(catalog: Catalog, pred: Dict[str, Any], names: Sequence[str],
                     kind: str, exclude: bool = False) -> List[Dict[str, Any]]:
    """Issue rows of a head's predictions on a dataset's training split.

    Args:
        catalog: the dataset.
        pred: `train.label_eval.predict_labels` output (`probs`, `labels`, `mask`,
            `paths`).
        names: the head's class (or tag) names, in the model's order.
        kind: "classification" or "multilabel".
        exclude: mark the rows for `exclude.txt`.

    Returns:
        Rows keyed by `inspect_catalog.ISSUE_COLUMNS` (issue `label_issue` or
        `tag_issue`), with `given` and `suggested` keys added for the thumbnail sheet.
    """
    row_of = _rows_by_path(catalog)
    rows_of_pred = [row_of.get(path_key(p)) for p in pred["paths"]]
    probs, labels, mask = pred["probs"], pred["labels"], pred["mask"] > 0
    rows: List[Dict[str, Any]] = []
    if kind == "classification":
        known = np.flatnonzero(mask.max(axis=1) & np.array([r is not None for r in rows_of_pred]))
        given = labels[known].argmax(axis=1)
        for i in classification_issues(probs[known], given):
            k, label = known[i], int(given[i])
            top = int(probs[k].argmax())
            row = issue_row(catalog, rows_of_pred[k], "label_issue", probs[k, label],
                            f"labelled '{names[label]}' (p={probs[k, label]:.2f}), the model "
                            f"says '{names[top]}' (p={probs[k, top]:.2f})", exclude)
            rows.append({**row, "given": names[label], "suggested": names[top]})
        return rows
    for tag, name in enumerate(names):
        known = np.flatnonzero(mask[:, tag] & np.array([r is not None for r in rows_of_pred]))
        values = labels[known, tag].round().astype(int)
        for i in tag_issues(probs[known, tag], values):
            k, value = known[i], int(values[i])
            p_given = probs[k, tag] if value else 1 - probs[k, tag]
            row = issue_row(catalog, rows_of_pred[k], "tag_issue", p_given,
                            f"tag '{name}' given {value}, the model says {1 - value} "
                            f"(p={probs[k, tag]:.2f})", exclude)
            rows.append({**row, "given": f"{name}={value}", "suggested": f"{name}={1 - value}"})
    rows.sort(key=lambda r: r["score"])
    return rows


def run_label_issues(run: str, catalogs: Sequence[Catalog], *, exclude: bool = False,
                     model: Optional[Any] = None) -> List[Dict[str, Any]]:
    """Label issues of every image-level dataset of `catalogs` that a run trained.

    Args:
        run: the run folder (`train.fit`'s).
        catalogs: the inspected datasets; those of the run's datasets with the same name
            and an image-level head are checked on their training split.
        exclude: mark the rows for `exclude.txt`.
        model: the run's model, already loaded (None: loaded from `run`).

    Returns:
        Rows as `label_issue_rows`'.
    """
    # pylint: disable=import-outside-toplevel  # TensorFlow and the model only with --run
    from train.label_eval import predict_labels
    from train.run_dir import load_run

    cfg, detector, classes = load_run(run)
    detector = model or detector
    by_name = {c.name: c for c in catalogs}
    rows = []
    for index, dataset in enumerate(cfg.data.datasets):
        catalog = by_name.get(dataset.name)
        head = (dataset.heads or [dataset.name])[0]
        if catalog is None or classes.get(head, {}).get("kind") not in (
                "classification", "multilabel"):
            continue
        pred = predict_labels(detector, cfg, index, "train", head)
        rows += label_issue_rows(catalog, pred, classes[head]["names"],
                                 classes[head]["kind"], exclude)
    return rows
