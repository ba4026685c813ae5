"""Export a run to a TensorFlow SavedModel with letterboxing, every head and NMS inside.

Usage:
    python -m export.saved_model --run RUN_DIR --out DIR [--weights best|last|final]
        [--overwrite]

Signatures:
    `serving_default`: `images` uint8 `[B, H, W, 3]` (any size, the same within a batch)
    -> per head `<head>_boxes` `[B, K, 4]` xyxy input pixels, `<head>_scores` `[B, K]`,
    `<head>_classes` int32 `[B, K]`, `<head>_class_names` string `[B, K]`,
    `<head>_num_detections` int32 `[B]`; padding rows have boxes and classes -1.
    `raw`: `images` float32 `[B, S, S, 3]` in 0..255 (already letterboxed) ->
    `<head>_class_logits` `[B, A, C]`, `<head>_box_deltas` `[B, A, 4]`.

Classification heads add `<head>_probabilities` `[B, C]`, `<head>_top_classes` int32
`[B, k]`, `<head>_top_scores` `[B, k]` and `<head>_top_names` string `[B, k]`;
multilabel heads `<head>_probabilities` `[B, T]` and `<head>_tags` int32 `[B, T]` (at the
thresholds saved in the model); `raw` gives their `<head>_logits`.

`DIR/<head>_classes.txt` lists each head's class names, one a line, in class order;
`DIR/preprocessing.json` the input the model expects (`export.sidecar`).
"""
import argparse
from typing import Optional, Sequence

import tensorflow as tf

from effdet_tf.cli import make_parser, run_cli
from effdet_tf.errors import ExportError
from export.cli_args import add_output_args, add_run_args
from export.graph import DetectionGraph, load_graph
from export.io import atomic_output, check_output
from export.sidecar import sidecar_files

SERVING_KEY = "serving_default"
RAW_KEY = "raw"


def write_saved_model(graph: DetectionGraph, out: str, *, overwrite: bool = False) -> str:
    """Writes the SavedModel of a `DetectionGraph` (atomically) with its class files.

    Args:
        graph: the detector and its post-processing (`with_names=True`).
        out: the SavedModel folder to create.
        overwrite: replace an existing `out`.

    Returns:
        `out`.

    Raises:
        ExportError: `out` exists without `overwrite`, or TensorFlow cannot save.
    """
    module = tf.Module()
    module.model = graph.model  # tracked, so its variables are saved (once)
    detect, raw = graph.detect_function(), graph.raw_function()
    module.detect, module.raw = detect, raw
    signatures = {SERVING_KEY: detect.get_concrete_function(),
                  RAW_KEY: raw.get_concrete_function()}
    with atomic_output(out, overwrite=overwrite, is_dir=True) as tmp:
        try:
            tf.saved_model.save(module, tmp, signatures=signatures)
        except (ValueError, TypeError, RuntimeError) as err:
            raise ExportError(f"cannot write the SavedModel {out}: {err}") from err
        for path, text in sidecar_files(graph, tmp).items():
            with open(path, "w", encoding="utf-8") as stream:
                stream.write(text)
    return out


def export_saved_model(run: str, out: str, *, weights: str = "final",
                       overwrite: bool = False, image_size: Optional[int] = None) -> str:
    """Exports a run folder's detector to a SavedModel.

    Args:
        run: the run folder (`config.yaml`, `classes.json`, checkpoints).
        out: the SavedModel folder to create.
        weights: "final" (`model.keras`), "best" or "last"; the last checkpoint stands
            in for a missing one.
        overwrite: replace an existing `out`.
        image_size: input side to export at (a multiple of 128); None keeps the run's.

    Returns:
        `out`.

    Raises:
        ConfigError: the run folder lacks its config, classes or weights.
        ExportError: `out` exists without `overwrite`, or saving fails.

    Example:
        >>> export_saved_model("runs/demo", "exports/demo_savedmodel")
    """
    check_output(out, overwrite)
    graph, _ = load_graph(run, weights=weights, image_size=image_size)
    return write_saved_model(graph, out, overwrite=overwrite)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = make_parser("python -m export.saved_model",
                         description="Export a run to a SavedModel (letterbox, all heads "
                                     "and NMS inside).")
    add_run_args(parser)
    add_output_args(parser, "SavedModel folder")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the CLI.

    Args:
        argv: arguments (default `sys.argv[1:]`).

    Returns:
        Exit code 0.
    """
    args = build_parser().parse_args(argv)
    out = export_saved_model(args.run, args.out, weights=args.weights,
                             overwrite=args.overwrite, image_size=args.image_size)
    print(f"wrote SavedModel {out} (signatures: {SERVING_KEY}, {RAW_KEY})")
    return 0


if __name__ == "__main__":
    run_cli(main)
