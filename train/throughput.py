"""Training throughput, split into its parts: `python -m train.throughput --config C`.

Builds the training model of a config exactly as `train.fit` does and measures, on the
machine it runs on, in images per second (median over `--windows` windows of `--steps`
steps each, after one warm-up window that also compiles):

- `input pipeline`: the training tf.data pipeline alone (reading, YOLOv4 augmentation,
  batching), pulled as numpy batches the way Keras feeds a JAX model;
- `model, one fixed batch`: the compiled train step fed one batch over and over (the
  host-to-device copy included, no augmentation cost): what the model alone can do;
- `pipeline + model`: `fit` on the real pipeline, batch-end callbacks async-safe (as
  `train.fit` runs it);
- `pipeline + model, wait each step`: the same with a callback that reads each step's
  loss before the next step starts (what a non-async-safe callback forces under JAX);
- `BN refresh`, `validation pass`, and the checkpoint writes (the detector's weights,
  as `last` or `best`; the resume backup of weights and optimizer state, its previous
  copy kept): seconds of the per-epoch work between training epochs
  (`train.refresh_bn_steps` batches of statistics, the validation loss;
  `train.save_interval_s` says which epochs write the last weights and backup), and
  `test-split detections`: the evaluation loop's forward passes and NMS over one
  dataset's test split (second calls; the first, which compiles, is shown beside);
  `evaluation forward`: one batch of `eval.batch_size` images through the traced pass
  that evaluation and prediction use (`train.compiled_call.inference`) and through the
  model's eager call, the reference (medians of 5 calls after the first), and their
  ratio.

Then the training FLOPs per image (3 x the forward multiply-adds of
`effdet_tf.model_stats`, x 2) give the achieved TFLOP/s and its share of the device's
peak (`--peak-tflops`, or the dense bf16 figure of a known GPU). `--single HEAD` measures
that head's single-head model too. A benchmark, run by hand (docs/results.md).
"""
import functools
import json
import os
import shutil
import statistics
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from effdet_tf.cli import make_parser, run_cli
from effdet_tf.config import ExperimentConfig, load_config

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from NVIDIA's data sheets; the
# first name found in the device's name is used.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "T4": 65.0}


def device_peak(name: str) -> Optional[float]:
    """The dense bf16 peak of a known accelerator name, or None."""
    for key, value in PEAK_TFLOPS.items():
        if key in name:
            return value
    return None


def device_name() -> str:
    """The accelerator Keras' backend runs on, in words ("cpu" when none)."""
    # pylint: disable=import-outside-toplevel  # backend-specific
    import keras
    if keras.backend.backend() == "jax":
        import jax
        device = jax.devices()[0]
        return getattr(device, "device_kind", device.platform)
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") \
        if gpus else "cpu"


def median_rate(seconds: Sequence[float], images: int) -> float:
    """Images per second from the median of window times of `images` images each."""
    return images / statistics.median(seconds)


def time_pipeline(dataset: Any, steps: int, windows: int) -> List[float]:
    """Seconds per window of `steps` numpy batches, after one warm-up window."""
    batches = dataset.as_numpy_iterator()
    times = []
    for window in range(windows + 1):
        start = time.perf_counter()
        for _ in range(steps):
            next(batches)
        if window:
            times.append(time.perf_counter() - start)
    return times


def time_fit(trainer: Any, dataset: Any, steps: int, windows: int,
             extra: Sequence[Any] = ()) -> List[float]:
    """Seconds of each `fit` epoch of `steps` steps; the first (compile, warm-up) dropped."""
    # pylint: disable=import-outside-toplevel  # heavy
    import keras

    class _Clock(keras.callbacks.Callback):
        async_safe = True

        def __init__(self):
            super().__init__()
            self.times: List[float] = []
            self._start = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            # Keras has waited for every step's logs (its batch-end work) by now.
            self.times.append(time.perf_counter() - self._start)

    clock = _Clock()
    trainer.fit(dataset, epochs=windows + 1, steps_per_epoch=steps, verbose=0,
                callbacks=[clock, *extra], shuffle=False)
    return clock.times


def _wait_each_step():
    # pylint: disable=import-outside-toplevel  # heavy
    import keras

    class WaitEachStep(keras.callbacks.Callback):
        """Reads the loss after every step (not async-safe: Keras waits for it)."""

        def on_train_batch_end(self, batch, logs=None):
            float((logs or {}).get("loss", 0.0))

    return WaitEachStep()


def measure(cfg: ExperimentConfig, *, steps: int, windows: int,
            report: Callable[[str, Dict[str, Any]], None], train: bool = True) -> None:
    """Measures one config's training throughput, reporting each row as it is done.

    Args:
        cfg: the experiment config (its heads, batch size, image size, precision).
        steps: steps per timing window.
        windows: timed windows per measurement (their median is reported).
        report: called with `(row name, row dict)` after each measurement.
        train: measure the training step (False: only the work between epochs).
    """
    # pylint: disable=import-outside-toplevel,too-many-locals  # heavy imports after arg checks
    import tensorflow as tf

    from effdet_tf.model_stats import forward_macs
    from train import data as data_lib
    from train.fit import build_trainer
    from train.strategy import make_strategy

    batch = cfg.train.batch_size
    images = steps * batch
    classes = data_lib.class_table(cfg)
    start = time.perf_counter()
    trainer, detector, augmenter, on_device = build_trainer(
        cfg, make_strategy(cfg.train.strategy), classes, steps)
    report("build", {"seconds": round(time.perf_counter() - start, 1)})
    flops = 6.0 * forward_macs(detector)["total"]  # (forward + 2 x backward) x 2 per MAC
    report("model", {"train_gflops_per_image": round(flops / 1e9, 2),
                     "heads": list(cfg.head_names)})
    if not train:
        _time_epoch_extras(cfg, trainer, detector, report)
        return
    train_data = data_lib.make_train_dataset(cfg, augmenter=None if on_device else augmenter)
    report("input pipeline", {"img_per_s": median_rate(
        time_pipeline(train_data, steps, windows), images)})
    fixed = tf.data.Dataset.from_tensors(next(iter(train_data))).repeat()
    start = time.perf_counter()
    times = time_fit(trainer, fixed, steps, windows)
    report("compile + first window", {"seconds": round(time.perf_counter() - start
                                                       - sum(times[1:]), 1)})
    rates = {"model, one fixed batch": median_rate(times[1:], images)}
    rates["pipeline + model"] = median_rate(time_fit(trainer, train_data, steps, windows)[1:],
                                            images)
    rates["pipeline + model, wait each step"] = median_rate(
        time_fit(trainer, train_data, steps, windows, [_wait_each_step()])[1:], images)
    for name, rate in rates.items():
        report(name, {"img_per_s": rate, "train_tflops": rate * flops / 1e12})
    _time_epoch_extras(cfg, trainer, detector, report)


TRACED = "evaluation forward, one batch, traced"
EAGER = "evaluation forward, one batch, eager call (reference)"


def _time_epoch_extras(cfg: ExperimentConfig, trainer: Any, detector: Any,
                       report: Callable[[str, Dict[str, Any]], None]) -> None:
    """Seconds of the per-epoch BN refresh, validation pass and checkpoint writes, and the
    evaluation speed."""
    # pylint: disable=import-outside-toplevel  # heavy
    import keras

    from train import data as data_lib
    from train.callbacks import EpochBackupAndRestore, atomic_save_weights
    from train.compiled_call import inference
    from train.evaluate import predict_head
    from train.precise_bn import recalibrate_batchnorm

    clean = iter(data_lib.clean_train_images(cfg))
    val = data_lib.make_val_dataset(cfg)
    folder = tempfile.mkdtemp(prefix="throughput_")
    backup = EpochBackupAndRestore(os.path.join(folder, "backup"), double_checkpoint=True)
    backup.set_model(trainer)
    # the content of the images does not change the work of a forward pass
    images = np.random.default_rng(0).uniform(
        0, 255, (cfg.eval.batch_size, cfg.data.image_size, cfg.data.image_size, 3)
    ).astype("float32")

    def fetched(outputs):  # the work ends when the results are on the host (JAX is async)
        return keras.tree.map_structure(keras.ops.convert_to_numpy, outputs)

    # name: (work, calls); the first call traces / compiles and the rest are timed (median)
    parts = {
        "BN refresh": (lambda: recalibrate_batchnorm(
            detector, clean, steps=cfg.train.refresh_bn_steps, progress=False), 2),
        "validation pass": (lambda: trainer.evaluate(val, verbose=0), 2),
        # train.fit writes these at the end of an epoch (train.save_interval_s)
        "weights write (last or best)": (lambda: atomic_save_weights(
            detector, os.path.join(folder, "last.weights.h5")), 2),
        "resume backup write (weights + optimizer, previous kept)": (
            lambda: backup.on_epoch_end(0, {}), 2),
        "test-split detections (first head)": (lambda: predict_head(
            detector, cfg, cfg.head_datasets(cfg.head_names[0])[0], "test",
            cfg.head_names[0]), 2),
        TRACED: (lambda: fetched(inference(detector)(images)), 6),
        EAGER: (lambda: fetched(detector(images, training=False)), 6),
    }
    seconds = {}
    try:
        for name, (work, calls) in parts.items():
            times = []
            for _ in range(calls):
                begin = time.perf_counter()
                work()
                times.append(time.perf_counter() - begin)
            seconds[name] = statistics.median(times[1:])
            report(name, {"seconds": round(seconds[name], 3 if calls > 2 else 2),
                          "first_call_seconds": round(times[0], 1)})
        report("evaluation forward: traced speed / eager speed",
               {"ratio": round(seconds[EAGER] / seconds[TRACED], 2)})
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def format_rows(label: str, rows: Dict[str, Dict[str, Any]], peak: Optional[float]) -> str:
    """A markdown table of one config's measured rows, with ratios to the model alone."""
    base = rows.get("model, one fixed batch", {}).get("img_per_s")
    lines = [f"### {label}", ""]
    if any("img_per_s" in row for row in rows.values()):
        lines += ["| measurement | img/s | vs model alone | TFLOP/s | share of peak |",
                  "|---|---:|---:|---:|---:|"]
    for name, row in rows.items():
        if "img_per_s" not in row:
            continue
        rate = row["img_per_s"]
        tflops = row.get("train_tflops")
        ratio = f"{rate / base:.2f}" if base else "-"
        achieved = f"{tflops:.3g}" if tflops is not None else "-"
        share = f"{100 * tflops / peak:.1f}%" if tflops is not None and peak else "-"
        lines.append(f"| {name} | {rate:.1f} | {ratio} | {achieved} | {share} |")
    for name, row in rows.items():
        if "img_per_s" not in row:
            lines.append(f"- {name}: " + ", ".join(f"{k} {v}" for k, v in row.items()))
    return "\n".join(lines)


def _report(results: Dict[str, Any], rows: Dict[str, Any], out: Optional[str], name: str,
            row: Dict[str, Any]) -> None:
    """Adds a row, prints it, and rewrites the JSON file (a timed-out run keeps its rows)."""
    rows[name] = row
    print(f"  {name}: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                    for k, v in row.items()), flush=True)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w", encoding="utf-8") as stream:
            json.dump(results, stream, indent=1)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point."""
    parser = make_parser("python -m train.throughput", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML experiment config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable)")
    parser.add_argument("--steps", type=int, default=20, help="steps per timing window")
    parser.add_argument("--windows", type=int, default=3, help="timed windows (median)")
    parser.add_argument("--single", action="append", default=[], metavar="HEAD",
                        help="also measure the single-head model of this head (repeatable)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak TFLOP/s (default: known GPUs' dense bf16)")
    parser.add_argument("--no-train", action="store_true",
                        help="skip the training-step rows (only the work between epochs)")
    parser.add_argument("--out", default=None, help="write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.steps < 2 or args.windows < 1:
        parser.error("--steps must be at least 2 and --windows at least 1")
    cfg = load_config(args.config, args.set)
    unknown = sorted(set(args.single) - set(cfg.head_names))
    if unknown:
        parser.error(f"--single {unknown[0]}: no such head in {args.config} "
                     f"(heads: {', '.join(cfg.head_names)})")
    from train.fit import prepare_data  # pylint: disable=import-outside-toplevel  # heavy
    prepare_data(cfg)
    device = device_name()
    peak = args.peak_tflops or device_peak(device)
    print(f"device: {device}; peak {peak or 'unknown (give --peak-tflops)'} TFLOP/s; "
          f"batch {cfg.train.batch_size}, {cfg.data.image_size} px, mixed precision "
          f"{cfg.train.mixed_precision}", flush=True)
    variants = [("all heads: " + ", ".join(cfg.head_names), cfg)]
    variants += [(f"{name} alone", cfg.with_heads([name])) for name in args.single]
    results: Dict[str, Any] = {"device": device, "peak_tflops": peak, "variants": {}}
    for label, variant_cfg in variants:
        rows: Dict[str, Dict[str, Any]] = {}
        results["variants"][label] = rows
        print(f"{label}:", flush=True)
        measure(variant_cfg, steps=args.steps, windows=args.windows,
                report=functools.partial(_report, results, rows, args.out),
                train=not args.no_train)
        print(format_rows(label, rows, peak), flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
