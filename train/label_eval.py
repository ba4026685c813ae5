"""Evaluation of the image-level heads (classification, multilabel) on their datasets.

Each head is scored on the split of every dataset that trains it, every image of that
split with a known label counted, next to the trivial baseline of the training labels
(always the majority class; every tag scored by its training prevalence). Multi-label
heads are scored at their saved per-tag thresholds, which `tune_thresholds` chooses on
the val split to maximise each tag's F1.
"""
import os
from typing import Any, Dict, List, Optional

import numpy as np
from tqdm import tqdm

from effdet_tf import batch_schema as schema
from effdet_tf.config import ExperimentConfig
from effdet_tf.names import IMAGE_LEVEL_KINDS
from train import export_runner, label_metrics, label_plots
from train.data import eval_dataset, scored_pairs

CLASSIFICATION_KEYS = ("accuracy", "top2_accuracy", "balanced_accuracy", "macro_f1", "mAP")
MULTILABEL_KEYS = ("micro_f1", "macro_f1", "mAP", "micro_precision", "micro_recall")


def predict_labels(model: Any, cfg: ExperimentConfig, dataset_id: int, split: str,
                   head: str) -> Dict[str, Any]:
    """Runs the model over one dataset's split; returns a head's probabilities and truth.

    Args:
        model: the detector, or an `train.export_runner.ExportRunner`.
        cfg: the experiment config.
        dataset_id: index of the dataset.
        split: "train", "val" or "test".
        head: an image-level head the dataset trains.

    Returns:
        `{"probs", "labels", "mask"}` float32 `[N, C]` (rows in the source's order) and
        `"ids"` and `"paths"`, the source's image ids and files.
    """
    dataset, source = eval_dataset(cfg, dataset_id, split)
    probs, labels, masks = [], [], []
    name = cfg.data.datasets[dataset_id].name
    with tqdm(total=source.num_images, desc=f"eval {head} on {name}/{split}", unit="img",
              leave=False, disable=None) as progress:  # None: no bar in a log file
        for batch in dataset:
            probs.append(export_runner.probabilities(model, batch[schema.IMAGES], head))
            labels.append(batch[schema.labels_key(head)].numpy())
            masks.append(batch[schema.label_mask_key(head)].numpy())
            progress.update(len(probs[-1]))
    return {"probs": np.concatenate(probs), "labels": np.concatenate(labels),
            "mask": np.concatenate(masks), "ids": list(source.ids), "paths": list(source.paths)}


def _known_rows(pred: Dict[str, Any]) -> Dict[str, Any]:
    """Keeps the rows with a known class (classification)."""
    keep = pred["mask"].max(axis=1) > 0
    return {"probs": pred["probs"][keep], "labels": pred["labels"][keep].argmax(axis=1)}


def score_head(kind: str, pred: Dict[str, Any], names: List[str], *,
               thresholds: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """The metrics of one image-level head's predictions (see `train.label_metrics`)."""
    if kind == "classification":
        known = _known_rows(pred)
        return label_metrics.classification_metrics(known["probs"], known["labels"], names)
    return label_metrics.multilabel_metrics(pred["probs"], pred["labels"], pred["mask"],
                                            thresholds, names)


def baseline(kind: str, pred: Dict[str, Any], names: List[str],
             table: Dict[str, Any]) -> Dict[str, Any]:
    """The trivial baseline's metrics: the prior of the training labels as every score.

    Args:
        kind: the head kind.
        pred: the head's predictions on the split (only the truth is used).
        names: class names.
        table: the head's entry of the class table (`train_counts`, `train_known`).

    Returns:
        Metrics like `score_head`'s.
    """
    prior = label_metrics.prior_scores(np.asarray(table["train_counts"], np.float32),
                                       np.asarray(table["train_known"], np.float32),
                                       len(pred["probs"]), kind)
    scored = {**pred, "probs": prior}
    thresholds = None
    if kind == "multilabel":  # a tag seen in training is predicted everywhere (best F1)
        thresholds = np.where(prior[0] > 0, prior[0] - 1e-6, 1.0)
    return score_head(kind, scored, names, thresholds=thresholds)


def tune_thresholds(model: Any, cfg: ExperimentConfig, split: str = "val") -> Dict[str, list]:
    """Sets every multilabel head's per-tag thresholds to those maximising F1 on `split`.

    Args:
        model: the detector (its heads' `thresholds` are assigned).
        cfg: the experiment config.
        split: the split the thresholds are chosen on.

    Returns:
        `{head: thresholds}` of the heads that were tuned.
    """
    tuned = {}
    for head in cfg.head_configs:
        if head.kind != "multilabel":
            continue
        parts = [predict_labels(model, cfg, index, split, head.name)
                 for index in cfg.head_datasets(head.name)]
        joined = {key: np.concatenate([p[key] for p in parts])
                  for key in ("probs", "labels", "mask")}
        thresholds = label_metrics.best_f1_thresholds(joined["probs"], joined["labels"],
                                                      joined["mask"])
        model.task_heads[head.name].set_thresholds(thresholds)
        tuned[head.name] = [round(float(t), 4) for t in thresholds]
    return tuned


def evaluate_labels(model: Any, cfg: ExperimentConfig, classes: Dict[str, Dict[str, Any]],
                    *, split: str = "test", out_dir: Optional[str] = None) -> Dict[str, Any]:
    """Metrics (and plots) of every image-level head on each dataset that trains it.

    Args:
        model: the detector.
        cfg: the experiment config.
        classes: the run's class table (`names`, `train_counts`, `train_known` per head).
        split: split to evaluate.
        out_dir: where the PNGs go (none when None): a confusion matrix and one-vs-rest
            PR curves per classification head, PR curves per multilabel head.

    Returns:
        `{key: metrics}`, each with a `baseline` entry (keys `<head>`, or
        `<head>/<dataset>` for a head several datasets train).
    """
    results: Dict[str, Any] = {}
    kinds = {h.name: h.kind for h in cfg.head_configs}
    for key, index, head in scored_pairs(cfg, IMAGE_LEVEL_KINDS):
        kind, names = kinds[head], list(classes[head]["names"])
        pred = predict_labels(model, cfg, index, split, head)
        thresholds = None
        if kind == "multilabel":
            thresholds = export_runner.thresholds(model, head)
        metrics = score_head(kind, pred, names, thresholds=thresholds)
        metrics["baseline"] = {k: v for k, v in baseline(kind, pred, names, classes[head]).items()
                               if not isinstance(v, (dict, list))}
        results[key] = {"kind": kind, **metrics}
        if out_dir:
            prefix = os.path.join(out_dir, f"{key.replace('/', '_')}_{split}_")
            title = f"{key} on {cfg.data.datasets[index].name}/{split}"
            if kind == "classification":
                known = _known_rows(pred)
                label_plots.plot_confusion(metrics["confusion"], names,
                                           prefix + "confusion.png", title)
                label_plots.plot_class_pr_curves(known["probs"], known["labels"], names,
                                                 prefix + "pr_curves.png", title)
            else:
                label_plots.plot_pr_curves(pred["probs"], pred["labels"], pred["mask"], names,
                                           thresholds, prefix + "pr_curves.png", title)
    return results


def format_label_table(results: Dict[str, Any], split: str) -> str:
    """Fixed-width tables of the main metrics, one row per head and one for its baseline."""
    rows = []
    for kind, keys in (("classification", CLASSIFICATION_KEYS),
                       ("multilabel", MULTILABEL_KEYS)):
        chosen = {k: m for k, m in results.items() if m.get("kind") == kind}
        if not chosen:
            continue
        rows.append(f"{kind} metrics on each head's own {split} split")
        rows.append(f"{'head':<22}" + "".join(f"{k:>18}" for k in keys) + f"{'images':>8}")
        for head, metrics in chosen.items():
            for label, values in ((head, metrics), ("  baseline", metrics["baseline"])):
                rows.append(f"{label:<22}" + "".join(f"{values[k]:>18.3f}" for k in keys)
                            + f"{values.get('num_images', 0):>8}")
    return "\n".join(rows)
