"""CPU latency of a run's detector: Keras, SavedModel and ONNX Runtime; two heads vs one.

Usage:
    python -m export.bench --run RUN_DIR [--repeats N] [--warmup N] [--batches 1 8]
        [--weights final|best|last] [--image-size S] [--out JSON] [--overwrite]
        [--no-single-heads] [--profile] [--saved-model DIR --onnx FILE.onnx]
        [--int8 [FILE_int8.onnx]]

The SavedModel and ONNX file are exported into a temporary folder with the same code
as `export.saved_model` and `export.onnx` (or given with `--saved-model`/`--onnx`).
Latency is the median of `--repeats` timed calls after `--warmup` untimed ones, on
uint8 `S x S` images, end to end (letterbox, model, decoding, NMS). Keras is
`effdet_tf.nms_tf.detect` called eagerly on the letterboxed batch. The two-head model
is compared with single-head models of the same architecture holding the same weights
(backbone, BiFPN and that head), so the sum of their latencies is what serving both
datasets with separate models would cost.

`--profile` adds where ONNX Runtime spends its time (convolutions, Mish, layout
reorders, NMS; `export.onnx_profile`) and times `onnx_relu_floor`, the ONNX file with
every Mish replaced by a ReLU fused into its convolution: no Mish in ONNX Runtime can be
faster, so it bounds what rewriting Mish could still win.

`--int8 FILE` adds `onnxruntime_int8`, that int8 file of the run (`export.onnx --int8`),
to the comparison; `--int8` alone quantises the run's ONNX file on the fly
(`export.quantize`, calibrated on its training images). Its size is listed with the
others and its latency is compared with fp32 ONNX and the SavedModel.
"""
import argparse
import functools
import json
import os
import platform
import statistics
import tempfile
import time
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from effdet_tf import nms_tf
from effdet_tf.cli import make_parser, run_cli
from effdet_tf.config import ExperimentConfig
from effdet_tf.errors import ConfigError
from export.bench_report import HEAD_RUNTIMES, format_report, head_table
from export.cli_args import add_run_args
from export.graph import DetectionGraph, copy_weights, graph_from_run, load_run_checked
from export.io import check_output, write_text_atomic
from export.onnx import DEFAULT_OPSET, onnx_session, write_onnx
from export.onnx_profile import profile_onnx, write_relu_floor
from export.saved_model import SERVING_KEY, write_saved_model


def interleaved_ms(calls: Dict[str, Callable[[], object]], repeats: int,
                   warmup: int) -> Dict[str, Dict[str, float]]:
    """Times several calls round-robin: median and 90th percentile in milliseconds.

    Taking turns exposes every runtime to the same background load, which matters on
    a shared CPU.

    Args:
        calls: `{name: function}` (results are discarded).
        repeats: timed rounds.
        warmup: untimed rounds first.

    Returns:
        `{name: {"median_ms", "p90_ms"}}`.
    """
    times: Dict[str, list] = {name: [] for name in calls}
    for round_index in range(warmup + repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if round_index >= warmup:
                times[name].append((time.perf_counter() - start) * 1000.0)
    result = {}
    for name, values in times.items():
        values.sort()
        result[name] = {"median_ms": statistics.median(values),
                        "p90_ms": values[min(len(values) - 1, int(0.9 * len(values)))]}
    return result


def folder_bytes(path: str) -> int:
    """Total size of a file or of every file below a folder."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def export_all(graph: DetectionGraph, folder: str) -> Dict[str, str]:
    """Exports `graph` below `folder` with the code of the export CLIs.

    Args:
        graph: the graph (built `with_raw=True`, as `export.onnx` does).
        folder: scratch folder.

    Returns:
        `{"saved_model": folder, "onnx": file}`.
    """
    return {"saved_model": write_saved_model(graph, os.path.join(folder, "model_savedmodel")),
            "onnx": write_onnx(graph, os.path.join(folder, "model.onnx"), opset=DEFAULT_OPSET)}


def runners(graph: DetectionGraph, paths: Dict[str, str]) -> Dict[str, Callable]:
    """A callable per runtime, each taking a uint8 `[B, S, S, 3]` batch.

    Args:
        graph: the graph (its Keras model is the Keras runtime).
        paths: `{"saved_model": folder, "onnx": file}` exported from the same graph.

    Returns:
        `{"keras", "saved_model", "onnxruntime"}` -> function of a uint8 batch.
    """
    serving = tf.saved_model.load(paths["saved_model"]).signatures[SERVING_KEY]
    session = onnx_session(paths["onnx"])
    input_name = session.get_inputs()[0].name

    def keras_call(images: np.ndarray):
        frames = tf.cast(tf.constant(images), tf.float32)
        return nms_tf.detect(graph.model, frames, score_threshold=graph.score_threshold,
                             iou_threshold=graph.iou_threshold,
                             max_detections=graph.max_detections)

    return {"keras": keras_call,
            "saved_model": lambda images: serving(images=tf.constant(images)),
            "onnxruntime": lambda images: session.run(None, {input_name: images})}


def int8_file(graph: DetectionGraph, run: str, given: str, folder: str) -> str:
    """The int8 file to time: `given`, or one quantised into `folder` when it is empty.

    Raises:
        ConfigError: `given` does not exist.
        ExportError: quantising fails (e.g. the run's training images are missing).
    """
    from export import quantize  # pylint: disable=import-outside-toplevel  # --int8 only

    if given:
        if not os.path.isfile(given):
            raise ConfigError(f"--int8 {given} does not exist")
        return given
    images = quantize.draw_images(quantize.split_images(quantize.run_config(run)),
                                  quantize.DEFAULT_CALIBRATION_IMAGES)
    path = os.path.join(folder, "int8", "model_int8.onnx")
    quantize.write_int8(graph, path, images)
    return path


def single_head_graph(graph: DetectionGraph, config: ExperimentConfig, classes: dict,
                      head: str) -> DetectionGraph:
    """A one-head detector of the same architecture with the two-head model's weights.

    Args:
        graph: the multi-head graph.
        config: the run config.
        classes: the run's class table.
        head: the head to keep.

    Returns:
        The single-head `DetectionGraph`.

    Raises:
        ExportError: a weight of the single-head model has no counterpart.
    """
    from train.run_dir import build_model  # pylint: disable=import-outside-toplevel  # heavy

    single_config = config.with_heads([head])
    single_config.data.image_size = graph.image_size
    model = build_model(single_config, {head: classes[head]})
    copy_weights(graph.model, model)
    return DetectionGraph(model, {head: graph.class_names[head]},
                          score_threshold=graph.score_threshold,
                          iou_threshold=graph.iou_threshold,
                          max_detections=graph.max_detections, with_raw=True)


def single_head_runners(graph: DetectionGraph, config: ExperimentConfig, classes: dict,
                        folder: str) -> Dict[str, Callable]:
    """Exports one single-head model per head; SavedModel and ONNX Runtime callables.

    Args:
        graph: the multi-head graph.
        config: the run config.
        classes: the class table.
        folder: scratch folder.

    Returns:
        `{"<runtime>:<head>": function of a uint8 batch}` for runtimes `saved_model`
        and `onnxruntime`.
    """
    calls = {}
    for head in graph.head_names:
        sub = os.path.join(folder, head)
        os.makedirs(sub)
        single = single_head_graph(graph, config, classes, head)
        head_calls = runners(single, export_all(single, sub))
        for runtime in HEAD_RUNTIMES:
            calls[f"{runtime}:{head}"] = head_calls[runtime]
    return calls


def add_floor(calls: Dict[str, Callable], onnx_path: str, folder: str) -> int:
    """Adds the `onnx_relu_floor` runtime (see the module docstring) to `calls`.

    Args:
        calls: runtime name -> function of a uint8 batch; extended in place.
        onnx_path: the exported ONNX file.
        folder: scratch folder for the floor's copy.

    Returns:
        How many Mish activations the copy replaces (0: no runtime added).
    """
    floor_path = os.path.join(folder, "relu_floor.onnx")
    replaced = write_relu_floor(onnx_path, floor_path)
    if replaced:
        session = onnx_session(floor_path)
        name = session.get_inputs()[0].name
        calls["onnx_relu_floor"] = lambda images: session.run(None, {name: images})
    return replaced


def bench(run: str, *, weights: str = "final", repeats: int = 20, warmup: int = 3,
          batches: Sequence[int] = (1, 8), single_heads: bool = True,
          exports: Optional[Dict[str, str]] = None, image_size: Optional[int] = None,
          profile: bool = False, int8: Optional[str] = None) -> dict:
    """Runs the benchmark.

    Args:
        run: the run folder.
        weights: checkpoint to use.
        repeats: timed calls per measurement.
        warmup: untimed calls first.
        batches: batch sizes.
        single_heads: also time one single-head model per head.
        exports: `{"saved_model": folder, "onnx": file}` already exported from this run
            and these weights; exported afresh into a temporary folder when None.
        image_size: benchmark at this input side (a multiple of 128) instead of the
            run's; given exports must have been made at it.
        profile: add the ONNX Runtime profile and the `onnx_relu_floor` runtime.
        int8: an int8 `.onnx` file of the run to add as `onnxruntime_int8`; "" quantises
            one on the fly; None leaves int8 out.

    Returns:
        The report (see `format_report`).

    Raises:
        ConfigError: bad arguments or run folder.
    """
    if repeats < 1 or warmup < 0 or not batches or min(batches) < 1:
        raise ConfigError("--repeats and --batches must be >= 1, --warmup >= 0")
    config, model, classes = load_run_checked(run, weights, image_size)
    graph = graph_from_run(config, model, classes, with_raw=True)
    size = graph.image_size
    rng = np.random.default_rng(0)
    inputs = {b: rng.integers(0, 256, (b, size, size, 3), np.uint8) for b in batches}

    report: dict = {"run": run, "image_size": size, "repeats": repeats, "warmup": warmup,
                    "batches": list(batches), "cpu_count": os.cpu_count(),
                    "machine": f"{platform.machine()} {platform.processor()}".strip(),
                    "heads": graph.head_names}
    with tempfile.TemporaryDirectory(prefix="effdet_bench_") as folder:
        paths = dict(exports) if exports else export_all(graph, folder)
        calls = runners(graph, paths)
        report["sizes_bytes"] = {"saved_model": folder_bytes(paths["saved_model"]),
                                 "onnx": folder_bytes(paths["onnx"])}
        if int8 is not None:
            int8_path = int8_file(graph, run, int8, folder)
            report["sizes_bytes"]["onnx_int8"] = folder_bytes(int8_path)
            int8_session = onnx_session(int8_path)
            int8_input = int8_session.get_inputs()[0].name
            calls["onnxruntime_int8"] = lambda images: int8_session.run(
                None, {int8_input: images})
        for name in (f"checkpoints/{weights}.weights.h5", "checkpoints/last.weights.h5",
                     "model.keras"):
            if os.path.isfile(os.path.join(run, name)):
                report["sizes_bytes"]["keras"] = folder_bytes(os.path.join(run, name))
                break
        if profile:
            report["floor_replaced"] = add_floor(calls, paths["onnx"], folder)
            report["profile"] = {str(b): profile_onnx(paths["onnx"], inputs[b],
                                                      runs=min(repeats, 3), scratch=folder)
                                 for b in batches}
        compare = single_heads and len(graph.head_names) > 1
        if compare:
            calls.update(single_head_runners(graph, config, classes, folder))
        latency: Dict[str, Dict[str, Dict[str, float]]] = {name: {} for name in calls}
        for batch in batches:
            timed = interleaved_ms({name: functools.partial(call, inputs[batch])
                                    for name, call in calls.items()}, repeats, warmup)
            for name, value in timed.items():
                latency[name][str(batch)] = value
    report["latency"] = {name: value for name, value in latency.items() if ":" not in name}
    if compare:
        report["single_heads"] = head_table(graph.head_names, latency, batches)
    return report


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = make_parser("python -m export.bench",
                         description="CPU latency of Keras, SavedModel and ONNX Runtime; "
                                     "two heads vs one.")
    add_run_args(parser)
    parser.add_argument("--repeats", type=int, default=20, help="timed runs")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8],
                        help="batch sizes")
    parser.add_argument("--saved-model", default=None,
                        help="use this SavedModel of the run instead of exporting one")
    parser.add_argument("--onnx", default=None,
                        help="use this .onnx file of the run instead of exporting one")
    parser.add_argument("--no-single-heads", action="store_true",
                        help="skip the two-head vs single-head comparison")
    parser.add_argument("--profile", action="store_true",
                        help="add ONNX Runtime's time per operation group and the "
                             "onnx_relu_floor lower bound")
    parser.add_argument("--int8", nargs="?", const="", default=None,
                        help="add this int8 .onnx file of the run (export.onnx --int8); "
                             "without a file, quantise the run's ONNX on the fly")
    parser.add_argument("--out", default=None, help="JSON file for the results")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the CLI.

    Args:
        argv: arguments (default `sys.argv[1:]`).

    Returns:
        Exit code 0.
    """
    args = build_parser().parse_args(argv)
    if args.out:
        check_output(args.out, args.overwrite)
    if (args.saved_model is None) != (args.onnx is None):
        raise ConfigError("give both --saved-model and --onnx, or neither")
    exports = {"saved_model": args.saved_model, "onnx": args.onnx} if args.onnx else None
    report = bench(args.run, weights=args.weights, repeats=args.repeats, warmup=args.warmup,
                   batches=args.batches, single_heads=not args.no_single_heads,
                   exports=exports, image_size=args.image_size, profile=args.profile,
                   int8=args.int8)
    print(format_report(report))
    if args.out:
        write_text_atomic(args.out, json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
