"""What each detection head finds on the images of the datasets that do not label it.

A head trained only on its own dataset's images is never told what background looks like
elsewhere: a fruits head may call a curtain "banana". COCO metrics score each head on its
own datasets only, so they do not see this; a user who runs every head on any image
does. `cross_detections` counts those detections (every one of them false where the
dataset holds none of the head's objects, as `background_for` and
`data.cross_background` declare), and `train.evaluate` prints them under the COCO table.
"""
from typing import Any, Dict, List, Tuple

import numpy as np

from effdet_tf.config import ExperimentConfig
from train.data import eval_dataset
from train.export_runner import heads_detections

# The score above which a detection counts: the prediction grids' threshold, a typical
# operating point (COCO metrics use every score down to `eval.score_threshold`).
CROSS_SCORE = 0.3


def cross_pairs(cfg: ExperimentConfig) -> List[Dict[str, Any]]:
    """Every (detection head, dataset that does not label it) pair of a config.

    Returns:
        `{"head", "dataset", "index", "background"}` per pair, `background` True where the
        dataset trains the head as background (`ExperimentConfig.background_heads`).
    """
    pairs = []
    for head in cfg.head_configs:
        if head.kind != "detection":
            continue
        for index, dataset in enumerate(cfg.data.datasets):
            if head.name in cfg.dataset_heads(dataset):
                continue
            pairs.append({"head": head.name, "dataset": dataset.name, "index": index,
                          "background": head.name in cfg.background_heads(dataset)})
    return pairs


def cross_detections(detector: Any, cfg: ExperimentConfig, *, split: str = "test",
                     score: float = CROSS_SCORE) -> List[Dict[str, Any]]:
    """Detections of each detection head on every other dataset's split.

    Args:
        detector: the Keras detector or an `train.export_runner.ExportRunner`.
        cfg: the experiment config.
        split: the split whose images are run.
        score: the lowest score counted.

    Returns:
        One dict per `cross_pairs` pair, with `images`, `detections` (at `score` or
        more), `per_image` and `images_with_any` (the share of images with one or more).
    """
    pairs = cross_pairs(cfg)
    counts: Dict[Tuple[str, int], List[int]] = {(p["head"], p["index"]): [] for p in pairs}
    for index in sorted({p["index"] for p in pairs}):  # each dataset read once
        heads = [p["head"] for p in pairs if p["index"] == index]
        dataset, _ = eval_dataset(cfg, index, split)
        for batch in dataset:  # one forward pass for every head of the dataset
            found = heads_detections(detector, batch["images"], heads, cfg)
            for head, out in found.items():
                for b in range(out["scores"].shape[0]):
                    kept = out["scores"][b, :int(out["num_detections"][b])]
                    counts[head, index].append(int(np.sum(kept >= score)))
    results = []
    for pair in pairs:
        per = np.array(counts[pair["head"], pair["index"]])
        results.append({**pair, "split": split, "score": score, "images": len(per),
                        "detections": int(per.sum()),
                        "per_image": float(per.sum()) / max(len(per), 1),
                        "images_with_any": float(np.mean(per > 0)) if len(per) else 0.0})
    return results


def format_cross_table(results: List[Dict[str, Any]]) -> str:
    """A fixed-width table of `cross_detections` (empty when there is no pair)."""
    if not results:
        return ""
    first = results[0]
    rows = [f"Detections of each detection head on the {first['split']} images of the "
            f"datasets that do not label it (score >= {first['score']}; false wherever a "
            "dataset holds none of the head's objects)",
            f"{'head':<14}{'on images of':<16}{'background':>11}{'images':>8}"
            f"{'per image':>11}{'images with any':>17}"]
    for res in results:
        rows.append(f"{res['head']:<14}{res['dataset']:<16}"
                    f"{'yes' if res['background'] else 'no':>11}{res['images']:>8}"
                    f"{res['per_image']:>11.2f}{res['images_with_any']:>17.1%}")
    return "\n".join(rows)
