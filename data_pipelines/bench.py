"""Throughput of our YOLOv4 augmentation vs keras-cv 0.9, same machine, same batches.

Usage::

    python -m data_pipelines.bench [--batch 16] [--size 512] [--steps 2] [--repeats 5]

Prints images per second (median over ``--repeats`` timed rounds of ``--steps`` batches
each, after one warm-up batch; the contenders take turns within each round so that the
load of a shared machine weighs on all of them alike) of:

- ours in ``tf.data`` (``map`` after ``batch``) as plain graph ops
  (``YoloV4Augment(..., jit_compile=False)``): Mosaic + CutMix + HSV + flip + jitter
  (``YoloV4Augment`` defaults, Mosaic and CutMix chance raised to 1 and 0.5 so both run
  on most examples);
- ours in ``tf.data`` as shipped (``jit_compile=True``, the default: the mapped chain is
  an XLA-compiled function, XLA on the CPU inside tf.data);
- ours inside a ``tf.function(jit_compile=True)``, as in a train step;
- keras-cv 0.9 in ``tf.data``: ``Mosaic`` + ``RandomFlip`` + ``JitteredResize`` +
  ``RandomHue`` + ``RandomSaturation`` with ``xyxy`` boxes (keras-cv has no CutMix with
  boxes), the nearest chain it offers.

Inputs are random uint8 images with random boxes, identical for every contender. The
tf.data pipelines run with autotune and prefetch injection off, so that an idle
iterator computes nothing in the background while another contender is timed.
"""
import gc
import os
import statistics
import time
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf

from data_pipelines.augment import YoloV4Augment
from effdet_tf.cli import make_parser

_DISTINCT_BATCHES = 4


def synthetic_batches(batch_size: int, size: int, max_boxes: int = 32, seed: int = 0,
                      count: int = _DISTINCT_BATCHES) -> list[dict]:
    """Random uint8 images with random xyxy boxes (-1 padded), two datasets per batch.

    Args:
        batch_size: examples per batch.
        size: image side.
        max_boxes: box rows per example.
        seed: numpy seed.
        count: number of distinct batches.

    Returns:
        A list of raw batches (numpy arrays).
    """
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        corner = rng.uniform(0, size * 0.8, (batch_size, max_boxes, 2))
        extent = rng.uniform(size * 0.02, size * 0.2, (batch_size, max_boxes, 2))
        boxes = np.concatenate([corner, np.minimum(corner + extent, size)], -1)
        classes = rng.integers(0, 10, (batch_size, max_boxes))
        used = rng.integers(1, max_boxes // 2, (batch_size, 1))
        padding = np.arange(max_boxes)[np.newaxis, :] >= used
        boxes[padding] = -1
        classes[padding] = -1
        batches.append({
            "images": rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8),
            "boxes": boxes.astype(np.float32),
            "classes": classes.astype(np.int32),
            "dataset_id": (np.arange(batch_size) % 2).astype(np.int32),
        })
    return batches


def _source(batches: list[dict]) -> tf.data.Dataset:
    """The batches, cycled forever, as an (already batched) dataset."""
    stacked = {key: np.stack([b[key] for b in batches]) for key in batches[0]}
    return tf.data.Dataset.from_tensor_slices(stacked).repeat()


def ours_dataset(batches: list[dict], aug: Callable) -> tf.data.Dataset:
    """Our chain (or a compiled wrapper of it) mapped over the batches in tf.data."""
    def apply(step, batch):
        return aug(batch, tf.stack([tf.cast(step, tf.int32), tf.constant(7)]))
    return _source(batches).enumerate().map(apply)


def keras_cv_dataset(batches: list[dict], size: int) -> tf.data.Dataset:
    """The keras-cv 0.9 chain mapped over the batches in tf.data."""
    if os.environ.setdefault("KERAS_BACKEND", "tensorflow") != "tensorflow":
        raise RuntimeError("keras-cv needs KERAS_BACKEND=tensorflow")
    try:
        import keras_cv  # pylint: disable=import-outside-toplevel  # needs KERAS_BACKEND set
    except ImportError as err:
        raise RuntimeError("the keras-cv reference needs keras-cv: "
                           "pip install -e '.[bench]'") from err

    layers = [
        keras_cv.layers.Mosaic(bounding_box_format="xyxy"),
        keras_cv.layers.RandomFlip(mode="horizontal", bounding_box_format="xyxy"),
        keras_cv.layers.JitteredResize(target_size=(size, size), scale_factor=(0.7, 1.3),
                                       bounding_box_format="xyxy"),
        keras_cv.layers.RandomHue(factor=0.2, value_range=(0, 255)),
        keras_cv.layers.RandomSaturation(factor=(0.35, 0.65)),
    ]

    def apply(batch):
        data = {"images": tf.cast(batch["images"], tf.float32),
                "bounding_boxes": {"boxes": batch["boxes"],
                                   "classes": tf.cast(batch["classes"], tf.float32)}}
        for layer in layers:
            data = layer(data)
        return data
    return _source(batches).map(apply)


def _touch(out: dict) -> None:
    """Forces the results to be computed."""
    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)


def _on_demand(dataset: tf.data.Dataset) -> Callable[[], dict]:
    """``next`` of the dataset, with no background prefetching to steal CPU from others."""
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.inject_prefetch = False
    iterator: Iterator = iter(dataset.with_options(options))
    return lambda: next(iterator)


def time_round_robin(contenders: dict, steps: int, repeats: int,
                     batch_size: int) -> dict:
    """Median images/s of each contender, timed in turns so load changes hit all alike.

    Each contender gets one warm-up call (tracing, compiling), then ``repeats`` rounds in
    which every contender runs ``steps`` calls in a row.

    Args:
        contenders: ``{name: call}``, each call producing one augmented batch.
        steps: calls per timed run.
        repeats: rounds.
        batch_size: images per call.

    Returns:
        ``{name: median images per second}``, without contenders whose warm-up failed.
    """
    ready = {}
    for name, call in contenders.items():
        try:
            _touch(call())
            ready[name] = call
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
            print(f"{name}: does not run: {error}")
    rates = {name: [] for name in ready}
    for _ in range(repeats):
        for name, call in ready.items():
            start = time.perf_counter()
            for _ in range(steps):
                _touch(call())
            rates[name].append(steps * batch_size / (time.perf_counter() - start))
    gc.collect()
    return {name: statistics.median(values) for name, values in rates.items()}


def run(batch_size: int = 16, size: int = 512, steps: int = 2, repeats: int = 5,
        with_keras_cv: bool = True) -> dict:
    """Measures every contender on the same batches.

    Args:
        batch_size: examples per batch.
        size: image side.
        steps: batches per timed run.
        repeats: timed rounds (the median is kept).
        with_keras_cv: also measure keras-cv.

    Returns:
        ``{name: images per second}``; a contender that does not compile is left out.
    """
    batches = synthetic_batches(batch_size, size)
    plain = YoloV4Augment(size, mosaic=1.0, cutmix=0.5, jit_compile=False)
    xla = tf.function(plain, jit_compile=True)
    inputs = [{k: tf.constant(v) for k, v in b.items()} for b in batches]
    counter = iter(range(10 ** 9))

    def xla_step():
        i = next(counter)
        return xla(inputs[i % len(inputs)], tf.constant([i, 7], tf.int32))

    contenders = {
        "ours, tf.data, plain graph": _on_demand(ours_dataset(batches, plain)),
        "ours, tf.data, XLA (default)": _on_demand(
            ours_dataset(batches, YoloV4Augment(size, mosaic=1.0, cutmix=0.5))),
        "ours, XLA train step": xla_step,
    }
    if with_keras_cv:
        contenders["keras-cv 0.9, tf.data"] = _on_demand(keras_cv_dataset(batches, size))
    return time_round_robin(contenders, steps, repeats, batch_size)


def format_table(results: dict, batch_size: int, size: int) -> str:
    """A text table of the results with the ratio to keras-cv."""
    reference = results.get("keras-cv 0.9, tf.data")
    lines = [f"YOLOv4 augmentation throughput, batch {batch_size}, {size}x{size}, "
             f"{os.cpu_count()} CPU cores",
             f"{'pipeline':<28} {'img/s':>8} {'vs keras-cv':>12}"]
    for name, rate in results.items():
        ratio = f"{rate / reference:.2f}x" if reference else "-"
        lines.append(f"{name:<28} {rate:>8.1f} {ratio:>12}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = make_parser("python -m data_pipelines.bench",
                         description=__doc__.split("\n", 1)[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2, help="batches per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median kept)")
    parser.add_argument("--no-keras-cv", action="store_true", help="skip keras-cv")
    args = parser.parse_args(argv)
    results = run(args.batch, args.size, args.steps, args.repeats, not args.no_keras_cv)
    print(format_table(results, args.batch, args.size))


if __name__ == "__main__":
    main()
