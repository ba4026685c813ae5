"""Is a bad validation loss the BN statistics or the weights? `python -m train.bn_check`.

A model trained with batch normalisation is evaluated with moving statistics that were
estimated on other images than the ones it is evaluated on (training batches, maybe
Mosaic/CutMix-mixed ones). When the validation loss or the test AP is bad while the
training loss falls, this command tells the two causes apart. It computes the validation
loss of one set of weights with its BN statistics taken, in turn, from:

- `saved`: the statistics stored with the weights (as the run validated them);
- `clean train`: clean training images (what `train.refresh_bn_steps` and precise BN use);
- `augmented train`: training batches through the run's augmentation, mixing off;
- `mixed train`: the same with Mosaic, CutMix and MixUp on (as a mixing epoch sees them);
- `validation`: the validation images themselves (the statistics of the images scored;
  each validation batch holds one dataset's images, training batches a mix).

If the loss is bad and about the same for every source, the weights are at fault; if it
is good with the validation images' own statistics and bad with the training ones, the
statistics are; if it swings widely from one source to another (a worst batch many times
the median), the weights depend on the batch statistics themselves, which no estimate
fixes.
It then lists the BN layers whose statistics differ most between the clean training and
the validation images (the mean shift in standard deviations of the training images).
The weights are not changed on disk. `--json` writes every figure.
"""
import json
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from effdet_tf.batch_schema import HEAD_MASK
from effdet_tf.cli import make_parser, run_cli
from effdet_tf.errors import ConfigError

WEIGHTS = ("final", "best", "last")


def _val_loss(detector: Any, val: Any) -> Dict[str, Any]:
    """Validation loss in inference mode, by the rule of the run's own `val_loss`: each
    head's loss averaged over the batches holding its examples, summed with the head loss
    weights (`train.callbacks.HeadSumValLoss`). Also the median and largest batch loss
    and every tracked part (`<head>_loss`, `<head>_<part>`)."""
    for metric in detector.metrics:
        metric.reset_state()
    losses = [float(detector.compute_loss(x=images, y=targets, training=False))
              for images, targets in val]
    if not losses:
        raise ConfigError("bn_check: the validation split has no batch")
    from train.callbacks import head_loss_sum  # pylint: disable=import-outside-toplevel  # heavy

    parts = {metric.name: float(metric.result()) for metric in detector.metrics}
    total = head_loss_sum(parts, detector.head_loss_weights)
    return {"val_loss": total, "median": float(np.median(losses)),
            "max": float(np.max(losses)), "parts": parts}


def _augmented_images(cfg: Any, mixing: bool) -> Optional[Iterator]:
    """Training image batches through the run's augmentation (None: augmentation off)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel  # heavy
    from train import data as data_lib  # pylint: disable=import-outside-toplevel  # heavy

    augmenter = data_lib.make_augmenter(cfg)
    if augmenter is None:
        return None
    augmenter.set_mixing(mixing)

    def images():
        raw = data_lib.make_train_dataset(cfg, augmenter=None)
        for step, batch in enumerate(raw):
            seed = tf.constant([cfg.train.seed + 101, step], tf.int32)
            yield augmenter(batch, seed)["images"]
    return images()


def _repeated_images(val: Any) -> Iterator:
    """The validation images, batch after batch, over and over (without the rows that
    fill a split's last batch, which no head reads: `train.data.fill_batch`)."""
    while True:
        for images, targets in val:
            real = np.sum(np.asarray(targets[HEAD_MASK]), axis=1) > 0
            yield images if real.all() else np.asarray(images)[real]


def bn_check(run: str, *, weights: str = "last", steps: int = 16,  # pylint: disable=too-many-locals  # one report
             top_layers: int = 8, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Validation loss of a run's weights under BN statistics from several sources.

    Args:
        run: run folder written by `train.fit`.
        weights: "final", "best", "last" or the path of a `.weights.h5` file of this run's
            model.
        steps: batches averaged for each source's statistics.
        top_layers: BN layers listed by how far the validation statistics are from the
            clean training ones.
        log: where each line of the report goes as it is computed.

    Returns:
        `{"run", "weights", "steps", "sources": {name: {"val_loss", "median", "max",
        "parts"}},
        "layers": [{"layer", "mean_shift", "variance_ratio"}, ...]}`.

    Raises:
        ConfigError: the run folder, the weights file or the validation data is missing.
    """
    if steps < 1:
        raise ConfigError(f"bn_check: --steps must be at least 1, got {steps}")
    by_name = weights in WEIGHTS
    if not by_name and not os.path.isfile(weights):
        raise ConfigError(f"{weights}: no such weights file (or one of {', '.join(WEIGHTS)})")
    # pylint: disable=import-outside-toplevel  # heavy imports, after the argument checks
    from train import data as data_lib
    from train.precise_bn import recalibrate_batchnorm, trainable_batchnorms
    from train.run_dir import load_run

    cfg, detector, _ = load_run(run, weights=weights if by_name else "last")
    if not by_name:
        detector.load_weights(weights)
    val = data_lib.make_val_dataset(cfg)
    layers = trainable_batchnorms(detector)

    def statistics() -> List[Tuple[np.ndarray, np.ndarray]]:
        return [(layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy())
                for layer in layers]

    def restore(stats: List[Tuple[np.ndarray, np.ndarray]]) -> None:
        for layer, (mean, variance) in zip(layers, stats):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)

    saved = statistics()
    sources = {
        "clean train": lambda: iter(data_lib.clean_train_images(cfg)),
        "augmented train": lambda: _augmented_images(cfg, mixing=False),
        "mixed train": lambda: _augmented_images(cfg, mixing=True),
        "validation": lambda: _repeated_images(val),
    }
    log(f"validation loss of {run} ({weights}) with BN statistics from {steps} batches of:")
    log(f"{'source':16s} {'val loss':>9s} {'median':>9s} {'max':>9s}  (median and max: "
        f"of the batches)")
    results: Dict[str, Dict[str, Any]] = {}
    estimated = {}

    def score(name: str) -> None:
        row = results[name] = _val_loss(detector, val)
        log(f"{name:16s} {row['val_loss']:9.3f} {row['median']:9.3f} {row['max']:9.3f}")

    score("saved")
    for name, images in sources.items():
        restore(saved)
        batches = images()
        if batches is None:
            log(f"{name:16s} (augmentation is off in this run)")
        elif recalibrate_batchnorm(detector, batches, steps=steps, progress=False) == 0:
            log(f"{name:16s} (no batch, or non-finite statistics)")
        else:
            estimated[name] = statistics()
            score(name)
    restore(saved)
    shifts: List[Dict[str, Any]] = []
    if "clean train" in estimated and "validation" in estimated:
        for layer, (mean, variance), (val_mean, val_variance) in zip(
                layers, estimated["clean train"], estimated["validation"]):
            floor = variance + layer.epsilon
            shifts.append({
                "layer": layer.path,
                "mean_shift": float(np.max(np.abs(val_mean - mean) / np.sqrt(floor))),
                "variance_ratio": float(np.max((val_variance + layer.epsilon) / floor))})
    shifts.sort(key=lambda row: -row["mean_shift"])
    log("BN layers whose validation statistics differ most from the clean training ones "
        "(largest channel; mean shift in training standard deviations):")
    for row in shifts[:top_layers]:
        log(f"  {row['mean_shift']:8.2f} sd  variance x{row['variance_ratio']:<8.2f} "
            f"{row['layer']}")
    return {"run": run, "weights": weights, "steps": steps, "sources": results,
            "layers": shifts}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point."""
    parser = make_parser("python -m train.bn_check", description=__doc__)
    parser.add_argument("--run", required=True, help="run folder written by train.fit")
    parser.add_argument("--weights", default="last",
                        help="final, best, last or a .weights.h5 file of the run's model")
    parser.add_argument("--steps", type=int, default=16,
                        help="batches averaged for each source's BN statistics")
    parser.add_argument("--top-layers", type=int, default=8, help="BN layers listed")
    parser.add_argument("--json", default=None, help="also write every figure to this file")
    args = parser.parse_args(argv)
    report = bn_check(args.run, weights=args.weights, steps=args.steps,
                      top_layers=args.top_layers)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(report, stream, indent=1)
    return 0


if __name__ == "__main__":
    run_cli(main)
