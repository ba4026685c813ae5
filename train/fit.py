"""Train the multi-head detector: `python -m train.fit --config CONFIG [--set key=value ...]`.

One run folder holds everything: the config, class table, CSV and TensorBoard logs,
best and last checkpoints, the backup used to resume after an interruption (deleted
once the run has finished), the final model, the learning-curve PNG and the per-head
COCO metrics on the test split. Every split's data is checked before training starts.
Running the same command again resumes an interrupted run from its last backup.
"""
import dataclasses
import json
import os
import shutil
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from effdet_tf.cli import make_parser, run_cli
from effdet_tf.config import ExperimentConfig, check_dataset_paths, dump_config, load_config
from effdet_tf.errors import EffdetError

DEFAULT_CONFIG = "configs/demo.yaml"
BACKUP_DIR = "backup"
SPLITS = ("train", "val", "test")


class TrainingError(EffdetError):
    """Training stopped on a non-finite loss."""


def mixing_schedule(cfg: ExperimentConfig) -> str:
    """The epochs that mix images (Mosaic, CutMix, MixUp), and the datasets kept whole."""
    aug = cfg.augment
    if not cfg.train.augment or max(aug.mosaic, aug.cutmix, aug.mixup) <= 0:
        return "off (augment.mosaic, cutmix and mixup are 0)"
    kept_whole: Dict[str, List[str]] = {}
    for dataset, mixes in zip(cfg.data.datasets, cfg.mixed_datasets):
        if not mixes:
            why = ("mix_images: false" if dataset.mix_images is False
                   else "image-level heads only, the default")
            kept_whole.setdefault(why, []).append(dataset.name)
    if sum(map(len, kept_whole.values())) == len(cfg.data.datasets):
        return "off (every dataset is kept whole: " + "; ".join(
            f"{', '.join(names)}: {why}" for why, names in kept_whole.items()) + ")"
    close, epochs = cfg.close_mosaic_epochs, cfg.train.epochs
    rule = "" if aug.close_mosaic is not None else ", the default for these heads"
    if close >= epochs:
        return f"off (augment.close_mosaic {close} >= {epochs} epochs{rule})"
    whole = f", whole images in the last {close} (augment.close_mosaic{rule})" if close else ""
    span = "epoch 1" if epochs - close == 1 else f"epochs 1-{epochs - close}"
    kept = "".join(f"; {', '.join(names)}: whole images in every epoch ({why})"
                   for why, names in kept_whole.items())
    return f"Mosaic/CutMix/MixUp in {span} of {epochs}{whole}{kept}"


def hue_shifts(cfg: ExperimentConfig) -> str:
    """Each dataset's largest hue shift when some dataset sets its own, else ""."""
    if not cfg.train.augment or all(d.hue is None for d in cfg.data.datasets):
        return ""
    return ", ".join(f"{d.name} {hue:g}" + (" (augment.hue)" if d.hue is None else "")
                     for d, hue in zip(cfg.data.datasets, cfg.dataset_hues))


def _head_sources(cfg: ExperimentConfig, head: Any) -> str:
    """`name (kind) <- datasets`, and the datasets it learns as background, if any."""
    line = f"{head.name} ({head.kind}) <- " + ", ".join(
        cfg.data.datasets[i].name for i in cfg.head_datasets(head.name))
    background = [d.name for d in cfg.data.datasets if head.name in cfg.background_heads(d)]
    return line + (f", background: {', '.join(background)}" if background else "")


def towers_line(detector: Any) -> Optional[str]:
    """What `model.detection_towers` made of the detector's detection heads, or None with
    fewer than two of them."""
    groups: Dict[str, list] = {}
    for name, head in detector.task_heads.items():
        if hasattr(head, "towers_name"):  # detection heads
            groups.setdefault(head.towers_name, []).append(name)
    if sum(len(names) for names in groups.values()) < 2:
        return None
    if detector.detection_towers == "per_head":
        return (f"detection heads {', '.join(n for g in groups.values() for n in g)} each have "
                "their own class and box towers (model.detection_towers: per_head; shared "
                "lets them learn boxes from every detection dataset)")
    parts = [f"{', '.join(names)} share one" if len(names) > 1
             else f"{names[0]} has its own (its options differ)" for names in groups.values()]
    return ("detection towers (class tower, box tower and box prediction; each head keeps "
            f"its class prediction): {'; '.join(parts)} (model.detection_towers: shared; "
            "per_head gives each head its own)")


def _optimizer(cfg: ExperimentConfig, total_steps: int, steps_per_epoch: int):
    import keras  # pylint: disable=import-outside-toplevel  # keep `--help` fast

    # pylint: disable-next=import-outside-toplevel  # imports keras
    from train.schedules import WarmupCosine, capped_warmup_steps

    base = cfg.learning_rate
    warmup = capped_warmup_steps(cfg.train.warmup_epochs, cfg.train.warmup_max_fraction,
                                 steps_per_epoch, total_steps)
    schedule = WarmupCosine(base_lr=base, total_steps=total_steps, warmup_steps=warmup)
    common = {"learning_rate": schedule,
              "global_clipnorm": cfg.train.clip_norm or None,
              "use_ema": cfg.train.ema_decay > 0,
              "ema_momentum": cfg.train.ema_decay or 0.99}
    if cfg.train.optimizer == "adamw":
        return keras.optimizers.AdamW(weight_decay=cfg.train.weight_decay, **common)
    return keras.optimizers.SGD(momentum=cfg.train.momentum,
                                weight_decay=cfg.train.weight_decay or None, **common)


def _distribution(cfg: ExperimentConfig):
    """The `train.strategy` of a config, and the config this worker trains with.

    A non-chief worker of a multi-worker run writes beside the chief's run folder, in
    `<run>.worker<index>`.
    """
    from train.strategy import make_strategy  # pylint: disable=import-outside-toplevel  # imports TF

    dist = make_strategy(cfg.train.strategy)
    dist.check_batch(cfg.train.batch_size)
    if not dist.is_chief:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(
            cfg.train, run_dir=f"{cfg.run_path}.worker{dist.worker_index}"))
    return dist, cfg


def precision_policy(backend: str) -> str:
    """The Keras dtype policy of `train.mixed_precision: true` under `backend`.

    bfloat16 under JAX (no loss scaling; Ampere and later GPUs, TPUs), float16 with loss
    scaling under TensorFlow, whose GPU users include T4s without bfloat16.
    """
    return "mixed_bfloat16" if backend == "jax" else "mixed_float16"


def jit_setting(cfg: ExperimentConfig, backend: str) -> bool:
    """Whether the training step is XLA-compiled: `train.jit_compile`, or when it is null,
    yes under JAX (un-jitted JAX runs the step op by op) and no under TensorFlow."""
    if cfg.train.jit_compile is not None:
        return bool(cfg.train.jit_compile)
    return backend == "jax"


def prepare_data(cfg: ExperimentConfig) -> None:
    """Generates the embedded sample datasets when the config asks, then checks every split.

    Every split the run reads (train, val and test) is validated here, before the run
    folder is made, so a data problem is found before training and leaves nothing behind.
    """
    # pylint: disable=import-outside-toplevel  # keep `--help` fast
    if cfg.data.sample_data:
        from data_pipelines.sample_data import ensure_sample_data
        ensure_sample_data(cfg.data.sample_data, seed=0)
    check_dataset_paths(cfg, splits=SPLITS)
    from train.data import validate_datasets
    validate_datasets(cfg, SPLITS)


def _callbacks(cfg: ExperimentConfig, run: str, detector: Any, steps: int, resuming: bool,
               verbose: int):
    """The training callbacks, in the order that keeps a killed run consistent.

    Returns:
        `(callbacks, checkpoint, nan_guard, throughput)`.
    """
    # pylint: disable=import-outside-toplevel  # keep `--help` fast
    import keras

    from train import callbacks as cbs
    from train.progress import EpochProgress
    from train.run_dir import backup_epochs, keep_log_rows

    schedule = cbs.SaveSchedule(cfg.train.save_interval_s, cfg.train.epochs)
    ckpt = cbs.DetectorCheckpoint(detector, os.path.join(run, "checkpoints"),
                                  schedule=schedule)
    if resuming:
        # Epochs logged after the backup was written are trained again: their rows go.
        keep_log_rows(os.path.join(run, "log.csv"),
                      backup_epochs(os.path.join(run, BACKUP_DIR)))
        ckpt.resume_from_log(os.path.join(run, "log.csv"))
    guard = cbs.NanGuard(steps, ckpt.last_path)
    speed = cbs.Throughput(cfg.train.batch_size)
    # The learning rate joins the logs before the loggers read them. BackupAndRestore goes
    # last: an epoch is marked done only after its log row and checkpoints are on disk,
    # so a kill -9 at any moment loses nothing it reports.
    callbacks = [
        cbs.HeadSumValLoss(detector.head_loss_weights), speed, guard,
        cbs.LearningRateLogger(), ckpt,
        keras.callbacks.CSVLogger(os.path.join(run, "log.csv"), append=resuming),
        cbs.EpochTensorBoard(os.path.join(run, "tensorboard"), write_graph=False),
    ]
    if verbose:
        callbacks.append(EpochProgress(cfg.train.epochs, steps, tuple(cfg.head_names),
                                       bar=verbose == 1))
    if cfg.train.patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(patience=cfg.train.patience))
    callbacks.append(cbs.EpochBackupAndRestore(
        os.path.join(run, BACKUP_DIR), schedule=schedule, double_checkpoint=True,
        delete_checkpoint=False))
    return callbacks, ckpt, guard, speed


def folder_megabytes(folder: str) -> float:
    """Total size of the files below `folder`, in MB (10^6 bytes)."""
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(folder) for name in names) / 1e6


def _finish(cfg: ExperimentConfig, detector: Any, classes: Dict[str, Any],
            summary: Dict[str, Any], *, evaluate: bool, clean_images: Any) -> Dict[str, Any]:
    # clean_images: the run's tf.data stream of clean training images (a fresh iterator
    # of it starts from its first batch).
    """After training: precise BN, final model, learning curves, test metrics, summary.

    Returns:
        `summary`, completed with the per-head test metrics.
    """
    # pylint: disable=import-outside-toplevel  # keep `--help` fast
    import numpy as np

    from train.evaluate import evaluate_model, format_table
    from train.label_eval import tune_thresholds
    from train.plots import plot_learning_curves
    from train.precise_bn import recalibrate_batchnorm
    from train.run_dir import MODEL_FILE

    run = summary["run"]
    recalibrated = recalibrate_batchnorm(detector, iter(clean_images),
                                         steps=cfg.train.precise_bn_steps)
    if recalibrated:
        print(f"precise BN: statistics re-estimated over {recalibrated} batches")
    tuned = tune_thresholds(detector, cfg, "val")
    for head, values in tuned.items():
        print(f"{head}: per-tag thresholds chosen on the val split for the best F1 "
              f"(median {np.median(values):.2f}, range {min(values):.2f}..{max(values):.2f})")
    detector.save(os.path.join(run, MODEL_FILE))
    # Finished: the run can no longer be resumed, so its resume backup (the weights and
    # optimizer state, twice) goes.
    shutil.rmtree(os.path.join(run, BACKUP_DIR), ignore_errors=True)
    plot_learning_curves(os.path.join(run, "log.csv"),
                         os.path.join(run, "plots", "learning_curves.png"))
    if evaluate:
        metrics = evaluate_model(detector, cfg, classes, split="test",
                                 out_dir=os.path.join(run, "eval_test"))
        summary["metrics"] = {h: {k: v for k, v in m.items() if k != "summary"}
                              for h, m in metrics.items()}
        print(format_table(metrics, "test"))
    with open(os.path.join(run, "summary.json"), "w", encoding="utf-8") as stream:
        json.dump(summary, stream, indent=1)
    speed = summary["images_per_second"]
    speed_text = f"{speed:.1f} img/s after warm-up" if speed else "too few steps to time"
    print(f"trained {summary['epochs_run']} epochs in {summary['train_seconds']:.0f} s "
          f"({speed_text}); everything is in {run} ({folder_megabytes(run):.0f} MB)")
    return summary


def build_trainer(cfg: ExperimentConfig, dist: Any, classes: Dict[str, Any],
                  steps: int) -> Tuple[Any, Any, Any, bool]:
    """The compiled training model of a config, as `train.fit` trains it.

    Sets the mixed-precision policy, builds the detector (backbone weights loaded) and
    its `DetectorTrainer` in the strategy's scope, compiles it with the optimiser and
    schedule for `steps` steps per epoch, and builds the optimizer's variables.

    Args:
        cfg: the experiment config.
        dist: the `train.strategy.Distribution` of the run.
        classes: the class table (`train.data.class_table`).
        steps: training steps per epoch.

    Returns:
        `(trainer, detector, augmenter, on_device)`: the augmenter (None when off) runs
        inside the train step when `on_device` (TensorFlow), else in tf.data.
    """
    # pylint: disable=import-outside-toplevel  # heavy imports after arg checks
    import keras

    from train import data as data_lib
    from train.precise_bn import trainable_batchnorms
    from train.run_dir import build_model
    from train.trainer import DetectorTrainer

    backend = keras.backend.backend()
    if cfg.train.mixed_precision:
        keras.mixed_precision.set_global_policy(precision_policy(backend))
    on_device = backend == "tensorflow" and cfg.train.augment_on_device
    size = cfg.data.image_size
    with dist.scope():  # every variable (model, optimizer, metrics) is made per replica
        augmenter = data_lib.make_augmenter(cfg)
        detector = build_model(cfg, classes, with_backbone_weights=True)
        for layer in trainable_batchnorms(detector):
            layer.momentum = cfg.train.bn_momentum
        detector.loss_normalizer = cfg.train.loss_normalizer
        detector.anchor_assigner = cfg.train.assigner
        dist.attach(detector)  # per-head normalisers summed over replicas
        trainer = DetectorTrainer(
            detector, augmenter=dist.seeded(augmenter) if on_device else None,
            seed=cfg.train.seed)
        trainer.compile(optimizer=_optimizer(cfg, steps * cfg.train.epochs, steps),
                        jit_compile=jit_setting(cfg, backend))
        # Marks the wrapper built (its detector already is) without running the model:
        # under JAX an eager forward pass compiles every op for its shape (362 XLA
        # compiles, 32 s of a 58 s build at 512 px on 2 CPU cores; on a GPU each
        # convolution is autotuned too).
        trainer.build((None, size, size, 3))
        # Optimizer variables made before fit: TF then traces the train step once, not twice.
        trainer.optimizer.build(trainer.trainable_variables)
    return trainer, detector, augmenter, on_device


def run_training(cfg: ExperimentConfig, *, overwrite: bool = False, evaluate: bool = True,
                 verbose: int = 1) -> Dict[str, Any]:
    """Trains a config end to end and evaluates every head on its test split.

    Args:
        cfg: the experiment config.
        overwrite: delete an existing run folder first.
        evaluate: run COCO evaluation on the test split at the end.
        verbose: Keras verbosity (1: progress bar, 2: one line per epoch, 0: quiet).

    Returns:
        `{"run": folder, "metrics": {head: ...}, "train_seconds", "images_per_second", ...}`.

    Raises:
        TrainingError: a non-finite loss stopped training.
    """
    # pylint: disable=import-outside-toplevel,too-many-locals  # heavy imports after arg checks
    prepare_data(cfg)
    dist, cfg = _distribution(cfg)  # before TF sets up its devices
    import keras

    from train import data as data_lib
    from train import callbacks as cbs
    from train.run_dir import prepare_run_dir, write_classes

    run, resuming = prepare_run_dir(cfg, overwrite=overwrite)
    print(f"run folder: {run}{' (resuming)' if resuming else ''}")
    print(f"strategy: {dist.name}, {dist.num_replicas} replica(s), global batch "
          f"{cfg.train.batch_size} = {cfg.train.batch_size // dist.num_replicas} per replica")
    print("config:\n" + dump_config(cfg))
    print("heads: " + "; ".join(_head_sources(cfg, h) for h in cfg.head_configs))
    if cfg.data.cross_background and cfg.background_routes:
        print("each detection head learns the other detection datasets' images as background "
              "(data.cross_background; set it false if they hold each other's objects)")
    if len(cfg.data.datasets) > 1:
        weights = data_lib.sampling_weights(cfg)
        print("share of the training images drawn: " + ", ".join(
            f"{d.name} {100 * w / sum(weights):.1f}%" for d, w in zip(cfg.data.datasets, weights))
            + f" (data.sampling_power {cfg.data.sampling_power:g})")
    print(f"learning rate: {cfg.learning_rate:g} ({cfg.train.optimizer}"
          f"{', the default for these heads' if cfg.train.learning_rate is None else ''})")
    print(f"image mixing: {mixing_schedule(cfg)}")
    hues = hue_shifts(cfg)
    if hues:
        print(f"largest hue shift: {hues}")
    keras.utils.set_random_seed(cfg.train.seed)
    classes = data_lib.class_table(cfg)
    write_classes(run, classes)
    steps = data_lib.steps_per_epoch(cfg)
    trainer, detector, augmenter, on_device = build_trainer(cfg, dist, classes, steps)
    towers = towers_line(detector)
    if towers:
        print(towers)
    callbacks, ckpt, guard, speed = _callbacks(cfg, run, detector, steps, resuming,
                                                verbose)
    # One dataset of clean training images (its sources read and probed once) serves the
    # BN refresh before each validation and, from its start again, precise BN at the end.
    clean_images = data_lib.clean_train_images(cfg)
    if cfg.train.refresh_bn_steps > 0:
        callbacks.insert(0, cbs.RefreshBatchNorm(detector, iter(clean_images),
                                                 cfg.train.refresh_bn_steps))
    if augmenter is not None and cfg.close_mosaic_epochs > 0:
        callbacks.insert(0, cbs.CloseMosaic(augmenter, cfg.train.epochs,
                                            cfg.close_mosaic_epochs))
    start = time.perf_counter()
    # tf.distribute splits each global batch over the replicas; across workers the
    # datasets are sharded by DATA (see train.strategy.Distribution.shard).
    with dist.fit_scope(trainer):
        history = trainer.fit(
            dist.shard(data_lib.make_train_dataset(
                cfg, augmenter=None if on_device else augmenter)),
            epochs=cfg.train.epochs, steps_per_epoch=steps,
            validation_data=dist.shard(data_lib.make_val_dataset(cfg)),
            callbacks=callbacks, verbose=0, shuffle=False)
    seconds = time.perf_counter() - start
    if guard.failure:
        raise TrainingError(guard.failure)
    summary: Dict[str, Any] = {
        "run": run, "train_seconds": round(seconds, 1),
        "epochs_run": len(history.history.get("loss", [])), "steps_per_epoch": steps,
        "images_per_second": round(speed.images_per_second, 2), "best_epoch": ckpt.best_epoch}
    return _finish(cfg, detector, classes, summary, evaluate=evaluate,
                   clean_images=clean_images)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point."""
    parser = make_parser("python -m train.fit", description=__doc__)
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help="YAML experiment config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.epochs=3 (repeatable)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete an existing run folder instead of resuming it")
    parser.add_argument("--quiet", action="store_true", help="one line per epoch")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.set)
    run_training(cfg, overwrite=args.overwrite, verbose=2 if args.quiet else 1)
    return 0


if __name__ == "__main__":
    run_cli(main)
