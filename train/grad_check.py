"""Which head moves the shared layers? `python -m train.grad_check --run RUN`.

In a multi-task model every head's loss sends a gradient into the layers the heads
share (the backbone, the BiFPN, the detection towers), and the optimiser follows their
sum. When one head learns nothing while the others do (its validation loss stays at the
class prior), this command shows whether its gradient in the shared layers is a small
share of that sum, or points against the others'. Over a few training batches of a
run's weights (augmented as in the run's last epochs: mixing off), it prints, for each
head:

- its weighted loss (`model.head_loss_weights` included, as in training);
- the norm of its gradient in each group of shared layers and in its own layers;
- its share of the summed gradient in the shared layers: the projection of its
  gradient on the sum, over the sum's squared norm (the shares add up to 1; a head
  with 0.01 barely steers the shared layers, a negative share pulls against the sum);
- how much the batches agree on its own layers' gradient (the mean cosine between
  every two batches' gradients: near 0, each batch pulls its own way, as when a head
  sits at the class prior with features that do not tell its classes apart);

then the cosine between every two heads' shared gradients, and how often the summed
gradient's norm exceeded `train.clip_norm` (clipping then scales every head's step).
Nothing in the run folder changes. `--json` writes every figure.
"""
import json
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np

from effdet_tf.cli import make_parser, run_cli
from effdet_tf.errors import ConfigError

WEIGHTS = ("final", "best", "last")
SHARED_HEAD_LAYERS = "shared head layers"


def layer_groups(detector: Any) -> List[str]:
    """The group of each trainable variable of a `MultiHeadDetector`, in order:
    `backbone`, `bifpn` (the rest of the feature pyramid), a head's name for the layers
    only that head runs, and `shared head layers` for those several heads run (the
    shared detection towers)."""
    backbone = {id(v) for v in detector.backbone.trainable_variables}
    pyramid = {id(v) for v in detector.feature_pyramid.trainable_variables}
    owners: Dict[int, List[str]] = {}
    for name, head in detector.task_heads.items():
        for var in head.trainable_variables:
            owners.setdefault(id(var), []).append(name)
    groups = []
    for var in detector.trainable_variables:
        heads = owners.get(id(var), [])
        groups.append("backbone" if id(var) in backbone else "bifpn" if id(var) in pyramid
                      else heads[0] if len(heads) == 1 else SHARED_HEAD_LAYERS)
    return groups


def _batches(cfg: Any, steps: int) -> Iterator:
    """`(images, targets)` training batches through the run's augmentation, mixing off."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel  # heavy
    from effdet_tf.batch_schema import split_batch  # pylint: disable=import-outside-toplevel
    from train import data as data_lib  # pylint: disable=import-outside-toplevel  # heavy

    augmenter = data_lib.make_augmenter(cfg)
    if augmenter is not None:
        augmenter.set_mixing(False)
    for step, batch in enumerate(data_lib.make_train_dataset(cfg, augmenter=None).take(steps)):
        if augmenter is not None:
            batch = augmenter(batch, tf.constant([cfg.train.seed + 202, step], tf.int32))
        yield split_batch(batch)


def _head_gradients(detector: Any, images: Any, targets: Dict[str, Any],
                    variables: List[Any]) -> Dict[str, Any]:
    """Each head's weighted loss and its gradient (numpy, zeros where it has none)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel  # heavy

    with tf.GradientTape(persistent=True) as tape:
        losses = detector.head_losses(targets, detector(images, training=True))
    result = {}
    for name, loss in losses.items():
        grads = tape.gradient(loss, variables)
        result[name] = (float(loss), [np.zeros(v.shape, np.float32) if g is None
                                      else np.asarray(tf.convert_to_tensor(g), np.float32)
                                      for v, g in zip(variables, grads)])
    del tape
    return result


def _flat(arrays: List[np.ndarray], index: List[int]) -> np.ndarray:
    return np.concatenate([arrays[i].ravel() for i in index]) if index else np.zeros(0)


def _cosine(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    scale = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b)) / scale if scale > 0 else None


def _agreement(gradients: List[np.ndarray]) -> Optional[float]:
    """The mean cosine between the gradients of every two batches (None for one batch):
    near 1, the batches agree on where the layers should go; near 0, each batch pulls
    its own way and the steps mostly cancel."""
    values = [c for i, a in enumerate(gradients) for b in gradients[i + 1:]
              if (c := _cosine(a, b)) is not None]
    return float(np.mean(values)) if values else None


def grad_check(run: str, *, weights: str = "final", steps: int = 4,  # pylint: disable=too-many-locals  # one report
               log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Per-head gradients of a run's weights in the shared layers and their own.

    Args:
        run: run folder written by `train.fit`.
        weights: "final", "best" or "last".
        steps: training batches averaged.
        log: where each line of the report goes.

    Returns:
        `{"run", "weights", "steps", "groups", "heads": {head: {"loss", "norms": {group:
        mean norm}, "shared_share", "own_agreement"}}, "cosine": {"a|b": mean cosine},
        "total_norm", "clipped_batches", "clip_norm"}`.

    Raises:
        ConfigError: a bad `weights` or `steps`, or a folder that is not a run.
    """
    if weights not in WEIGHTS:
        raise ConfigError(f"grad_check: --weights must be one of {', '.join(WEIGHTS)}, "
                          f"got {weights!r}")
    if steps < 1:
        raise ConfigError(f"grad_check: --steps must be at least 1, got {steps}")
    from train.run_dir import load_run  # pylint: disable=import-outside-toplevel  # heavy

    cfg, detector, _ = load_run(run, weights=weights)
    heads = list(detector.head_names)
    variables = list(detector.trainable_variables)
    groups = layer_groups(detector)
    shared_groups = [g for g in ("backbone", "bifpn", SHARED_HEAD_LAYERS) if g in groups]
    members = {g: [i for i, x in enumerate(groups) if x == g] for g in shared_groups + heads}
    shared = [i for g in shared_groups for i in members[g]]
    norms: Dict[str, Dict[str, List[float]]] = {h: {} for h in heads}
    losses: Dict[str, List[float]] = {h: [] for h in heads}
    shares: Dict[str, List[float]] = {h: [] for h in heads}
    own: Dict[str, List[np.ndarray]] = {h: [] for h in heads}
    cosines: Dict[str, List[float]] = {}
    totals: List[float] = []
    log(f"gradients of {run} ({weights}) over {steps} training batches (mixing off):")
    for step, (images, targets) in enumerate(_batches(cfg, steps)):
        per_head = _head_gradients(detector, images, targets, variables)
        flats = {h: _flat(per_head[h][1], shared) for h in heads}
        total = sum(flats.values())
        for head in heads:
            losses[head].append(per_head[head][0])
            own[head].append(_flat(per_head[head][1], members[head]))
            for group in shared_groups + [head]:
                norms[head].setdefault(group, []).append(
                    float(np.linalg.norm(_flat(per_head[head][1], members[group]))))
        # A head's own layers get no gradient from the others: the summed gradient is the
        # shared sum next to every head's own part.
        square = float(np.dot(total, total))
        totals.append(float(np.sqrt(square + sum(float(np.dot(g[-1], g[-1]))
                                                 for g in own.values()))))
        for head in heads:
            shares[head].append(float(np.dot(flats[head], total)) / (square or 1.0))
        for i, first in enumerate(heads):
            for second in heads[i + 1:]:
                value = _cosine(flats[first], flats[second])
                if value is not None:
                    cosines.setdefault(f"{first}|{second}", []).append(value)
        log(f"  batch {step + 1}/{steps}: summed gradient norm {totals[-1]:.3g}")
    if not totals:
        raise ConfigError(f"{run}: the training split gave no batch")
    report: Dict[str, Any] = {
        "run": run, "weights": weights, "steps": len(totals), "groups": shared_groups,
        "heads": {h: {"loss": float(np.mean(losses[h])),
                      "norms": {g: float(np.mean(v)) for g, v in norms[h].items()},
                      "shared_share": float(np.mean(shares[h])),
                      "own_agreement": _agreement(own[h])} for h in heads},
        "cosine": {k: float(np.mean(v)) for k, v in cosines.items()},
        "total_norm": float(np.median(totals)), "clip_norm": cfg.train.clip_norm,
        "clipped_batches": int(sum(t > cfg.train.clip_norm for t in totals
                                   if cfg.train.clip_norm))}
    _log_report(report, log)
    return report


def _log_report(report: Dict[str, Any], log: Callable[[str], None]) -> None:
    """The table of `grad_check`'s report."""
    groups = report["groups"]
    header = f"{'head':14s} {'loss':>8s} " + " ".join(f"{'|g| ' + g:>22s}" for g in groups)
    log(header + f" {'|g| own':>10s} {'share of shared':>16s} {'own agreement':>14s}")
    for head, row in report["heads"].items():
        cells = " ".join(f"{row['norms'][g]:22.3g}" for g in groups)
        agreement = row["own_agreement"]
        log(f"{head:14s} {row['loss']:8.4f} {cells} {row['norms'][head]:10.3g} "
            f"{row['shared_share']:16.3f} "
            + (f"{agreement:14.3f}" if agreement is not None else f"{'-':>14s}"))
    for pair, value in report["cosine"].items():
        log(f"cosine of the shared gradients, {pair.replace('|', ' vs ')}: {value:.3f}")
    clip = report["clip_norm"]
    log(f"summed gradient norm (median) {report['total_norm']:.3g}; "
        + (f"over train.clip_norm {clip:g} in {report['clipped_batches']} of "
           f"{report['steps']} batches" if clip else "train.clip_norm off"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point."""
    parser = make_parser("python -m train.grad_check", description=__doc__)
    parser.add_argument("--run", required=True, help="run folder written by train.fit")
    parser.add_argument("--weights", default="final", choices=WEIGHTS)
    parser.add_argument("--steps", type=int, default=4, help="training batches averaged")
    parser.add_argument("--json", default=None, help="also write every figure to this file")
    args = parser.parse_args(argv)
    folder = os.path.dirname(os.path.abspath(args.json)) if args.json else ""
    if folder and not os.path.isdir(folder):
        raise ConfigError(f"{args.json}: its folder {folder} does not exist")
    report = grad_check(args.run, weights=args.weights, steps=args.steps)
    if args.json:
        from export.io import write_text_atomic  # pylint: disable=import-outside-toplevel  # only with --json
        write_text_atomic(args.json, json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    run_cli(main)
