"""Export a run to ONNX through tf2onnx, with letterboxing, every head and NMS inside.

Usage:
    python -m export.onnx --run RUN_DIR --out FILE.onnx [--opset 17]
        [--weights best|last|final] [--overwrite] [--int8 [--calibration-images 64]]

The ONNX graph is the SavedModel's `serving_default` graph: input `images` uint8
`[B, H, W, 3]` with batch, height and width all dynamic; outputs per head
`<head>_boxes`, `<head>_scores`, `<head>_classes`, `<head>_class_names` (ONNX strings),
`<head>_num_detections`, plus the raw `<head>_class_logits` and `<head>_box_deltas` of
the letterboxed frame (used by `export.verify`). NMS is `combined_non_max_suppression`
with one box per anchor shared by all classes (q = 1), which tf2onnx turns into ONNX
`NonMaxSuppression`. Mish activations are rewritten into operations ONNX Runtime
vectorises (`export.onnx_rewrite`). `<head>_classes.txt` files beside the ONNX file
list the classes; `preprocessing.json` the input the model expects (`export.sidecar`).

tf2onnx logs unsupported operations instead of raising and writes an invalid file, so
every export is loaded in ONNX Runtime and run once before it is renamed into place;
a file that does not run is deleted and reported.

`--int8` writes a statically quantised file instead (QDQ, int8 weights, uint8
activations, calibrated on `--calibration-images` of the run's training images; letterbox,
decoding and NMS stay float32): see `export.quantize`.
"""
import argparse
import logging
import os
from typing import Optional, Sequence

import numpy as np

from effdet_tf.cli import make_parser, run_cli
from effdet_tf.errors import ConfigError, ExportError
from export.cli_args import add_output_args, add_run_args
from export.graph import DetectionGraph, load_graph
from export.io import atomic_output, check_class_files, check_output, write_class_files
from export.sidecar import sidecar_files
from export.onnx_rewrite import rewrite_mish

DEFAULT_OPSET = 17
# Lowest opset tested here; NonMaxSuppression needs 10, our Resize/Round usage 11+.
MIN_OPSET = 13


def supported_opsets() -> range:
    """Opsets this export accepts: `MIN_OPSET` up to the newest tf2onnx knows."""
    from tf2onnx import constants  # pylint: disable=import-outside-toplevel  # heavy import

    return range(MIN_OPSET, max(constants.OPSET_TO_IR_VERSION) + 1)


def check_opset(opset: int) -> None:
    """Raises `ConfigError` for an opset tf2onnx cannot produce for this graph.

    Args:
        opset: the requested ONNX opset.

    Raises:
        ConfigError: the opset is out of range.
    """
    opsets = supported_opsets()
    if opset not in opsets:
        raise ConfigError(f"opset {opset} is not supported: tf2onnx converts this graph for "
                          f"opsets {opsets.start}..{opsets.stop - 1}")


def session_options():
    """The `onnxruntime.SessionOptions` every session here uses (quiet, no spinning)."""
    import onnxruntime as ort  # pylint: disable=import-outside-toplevel  # optional runtime

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Spinning worker threads cost far more than they save on a shared or busy CPU.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def onnx_session(path: str):
    """Opens an ONNX file in ONNX Runtime on the CPU.

    Args:
        path: the `.onnx` file.

    Returns:
        An `onnxruntime.InferenceSession`.
    """
    import onnxruntime as ort  # pylint: disable=import-outside-toplevel  # optional runtime

    return ort.InferenceSession(path, sess_options=session_options(),
                                providers=["CPUExecutionProvider"])


def smoke_test(path: str, graph: DetectionGraph) -> None:
    """Loads an ONNX file in ONNX Runtime and runs it once on a dummy batch.

    Args:
        path: the `.onnx` file.
        graph: the graph it was made from (expected outputs, model size).

    Raises:
        ExportError: ONNX Runtime cannot load or run it, or outputs are missing or wrong.
    """
    size = graph.image_size
    images = np.random.default_rng(0).integers(0, 256, (2, size * 3 // 4, size, 3), np.uint8)
    try:
        session = onnx_session(path)
        names = [out.name for out in session.get_outputs()]
        values = session.run(None, {session.get_inputs()[0].name: images})
    except Exception as err:  # pylint: disable=broad-except  # ORT raises many error types
        raise ExportError(f"the converted model does not run in ONNX Runtime "
                          f"({type(err).__name__}: {err}); see the tf2onnx log above for "
                          "unsupported operations") from err
    expected = {f"{head}_boxes": (2, graph.max_detections, 4) for head in graph.detection_heads}
    got = dict(zip(names, values))
    for name, shape in expected.items():
        if name not in got or tuple(got[name].shape) != shape:
            found = tuple(got[name].shape) if name in got else "missing"
            raise ExportError(f"ONNX output {name}: expected shape {shape}, got {found}")


def convert(graph: DetectionGraph, path: str, opset: int) -> None:
    """Converts a `DetectionGraph` to an ONNX file with tf2onnx (no checks).

    Args:
        graph: the graph (`with_raw=True` to carry the raw outputs).
        path: file to write.
        opset: ONNX opset.

    Raises:
        ExportError: tf2onnx raises.
    """
    import tf2onnx  # pylint: disable=import-outside-toplevel  # heavy, export only

    tf2onnx.logging.set_level(logging.ERROR)
    try:
        proto, _ = tf2onnx.convert.from_function(
            graph.detect_function(), input_signature=graph.detect_signature, opset=opset)
    except Exception as err:  # pylint: disable=broad-except  # tf2onnx raises many types
        raise ExportError(f"tf2onnx could not convert the graph at opset {opset} "
                          f"({type(err).__name__}: {err})") from err
    rewrite_mish(proto)
    with open(path, "wb") as stream:
        stream.write(proto.SerializeToString())


def write_onnx(graph: DetectionGraph, out: str, *, opset: int = DEFAULT_OPSET,
               overwrite: bool = False) -> str:
    """Converts, checks in ONNX Runtime and writes `out` atomically, with class files.

    Args:
        graph: the graph to convert.
        out: the `.onnx` file to create.
        opset: ONNX opset.
        overwrite: replace an existing `out` (and its class files).

    Returns:
        `out`.

    Raises:
        ConfigError: unsupported opset.
        ExportError: `out` exists without `overwrite`, conversion fails or the result
            does not run (nothing is left behind then).
    """
    check_opset(opset)
    files = sidecar_files(graph, os.path.dirname(os.path.abspath(out)))
    check_class_files(files, overwrite)
    with atomic_output(out, overwrite=overwrite) as tmp:
        convert(graph, tmp, opset)
        smoke_test(tmp, graph)
    write_class_files(files)
    return out


def export_onnx(run: str, out: str, *, opset: int = DEFAULT_OPSET, weights: str = "final",
                overwrite: bool = False, image_size: Optional[int] = None) -> str:
    """Exports a run folder's detector to ONNX.

    Args:
        run: the run folder.
        out: the `.onnx` file to create.
        opset: ONNX opset (`supported_opsets()`).
        weights: "final" (`model.keras`), "best" or "last"; the last checkpoint stands
            in for a missing one.
        overwrite: replace an existing `out`.
        image_size: input side to export at (a multiple of 128); None keeps the run's.

    Returns:
        `out`.

    Raises:
        ConfigError: bad opset, run folder or image size.
        ExportError: existing output, failed conversion or a file that does not run.

    Example:
        >>> export_onnx("runs/demo", "exports/demo.onnx", opset=17)
    """
    check_opset(opset)
    check_output(out, overwrite)
    graph, _ = load_graph(run, weights=weights, with_names=True, with_raw=True,
                          image_size=image_size)
    return write_onnx(graph, out, opset=opset, overwrite=overwrite)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = make_parser("python -m export.onnx",
                         description="Export a run to ONNX (letterbox, all heads and NMS inside).")
    add_run_args(parser)
    add_output_args(parser, ".onnx file")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help="ONNX opset")
    parser.add_argument("--int8", action="store_true",
                        help="quantise statically to int8 (export.quantize), calibrated on "
                             "the run's training images")
    parser.add_argument("--calibration-images", type=int, default=64,
                        help="with --int8: training images drawn for calibration")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the CLI.

    Args:
        argv: arguments (default `sys.argv[1:]`).

    Returns:
        Exit code 0.
    """
    args = build_parser().parse_args(argv)
    if args.int8:
        from export.quantize import export_int8  # pylint: disable=import-outside-toplevel,cyclic-import

        done = export_int8(args.run, args.out, opset=args.opset, weights=args.weights,
                           overwrite=args.overwrite, image_size=args.image_size,
                           calibration_images=args.calibration_images)
        print(f"wrote {args.out} (int8 QDQ, {done['quantized_nodes']} nodes quantised, "
              f"calibrated on {done['calibration_images']} training images; opset "
              f"{args.opset}; checked in ONNX Runtime)")
        return 0
    out = export_onnx(args.run, args.out, opset=args.opset, weights=args.weights,
                      overwrite=args.overwrite, image_size=args.image_size)
    print(f"wrote {out} (opset {args.opset}; checked in ONNX Runtime)")
    return 0


if __name__ == "__main__":
    run_cli(main)
