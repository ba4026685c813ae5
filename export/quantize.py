"""Static int8 quantisation of the exported ONNX detector, calibrated on the run's own images.

Usage (through `export.onnx`):
    python -m export.onnx --run RUN_DIR --out FILE_int8.onnx --int8
        [--calibration-images 64] [--weights best|last|final] [--image-size S]

The fp32 graph of `export.onnx` is converted into a temporary folder, checked in ONNX
Runtime, then quantised with `onnxruntime.quantization.quantize_static`: QDQ format,
per-channel symmetric int8 weights, uint8 activations (U8S8, what ONNX Runtime's CPU
provider runs with VNNI / AVX2 kernels; its QDQ transformer fuses `DQ -> Conv -> Q` into
`QLinearConv`), MinMax calibration. Only the network proper is quantised: the `Conv`,
`MatMul` and `Gemm` nodes from which a raw output (`<head>_class_logits`,
`<head>_box_deltas`, `<head>_logits`) is reachable. Letterboxing, box decoding, NMS and
the image-level post-processing stay float32, and so do Mish, Swish, pooling and
resizing (dequantised between layers). `onnxruntime.quantization.quant_pre_process`
(ONNX Runtime's graph optimisations, without symbolic shape inference) runs first;
where it fails the converted file is quantised as it is.

Calibration reads `--calibration-images` images of the run's training splits, drawn
with a fixed seed and in turn from each dataset of its config (so every head's data is
seen), each fed as a uint8 `[1, H, W, 3]` batch at its own size, exactly as the
exported graph takes it; every image counts (slices of at most `MAX_STRIDE`, their
ranges merged). The int8 file is loaded and run in ONNX Runtime before it is
renamed into place; the sidecar files are those of the fp32 export.
"""
import contextlib
import io
import os
import random
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Set

import numpy as np

from effdet_tf.errors import ConfigError, DataError, ExportError
from export.graph import DetectionGraph, load_graph
from export.io import (atomic_output, check_class_files, check_output, read_image,
                       write_class_files)
from export.onnx import DEFAULT_OPSET, check_opset, convert, smoke_test
from export.sidecar import sidecar_files

DEFAULT_CALIBRATION_IMAGES = 64
CALIBRATION_SEED = 0
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
RAW_SUFFIXES = ("_class_logits", "_box_deltas", "_logits")
# Calibration runs the images in slices of at most this many, merging each slice's
# per-tensor minima/maxima, so memory stays bounded (ONNX Runtime's strided MinMax).
# Not `CalibMaxIntermediateOutputs`: in onnxruntime 1.32 it drops every full block of
# outputs without measuring it, so 64 images failed with "No data is collected" and 70
# were calibrated on their last 6.
MAX_STRIDE = 16


def calibration_stride(count: int) -> int:
    """The largest slice size <= `MAX_STRIDE` that divides `count` (ONNX Runtime requires
    equal slices)."""
    return next(s for s in range(min(MAX_STRIDE, count), 0, -1) if count % s == 0)


def _coco_paths(source: Any) -> List[str]:
    """Image files of a COCO split, in the annotation file's order."""
    return [os.path.join(source.image_dir, source.coco.imgs[i]["file_name"])
            for i in source.image_ids]


def split_images(config: Any, split: str = "train",
                 purpose: str = "calibration") -> Dict[str, List[str]]:
    """The image files of one split of every dataset of a run config.

    Args:
        config: the run's `ExperimentConfig`.
        split: "train", "val" or "test".
        purpose: what needs them, for messages.

    Returns:
        `{dataset name: [path, ...]}`, in the source's order.

    Raises:
        ExportError: a dataset's split cannot be read or lists no image.
    """
    from data_pipelines.coco import CocoSource  # pylint: disable=import-outside-toplevel  # heavy
    from data_pipelines.sources import open_source  # pylint: disable=import-outside-toplevel

    need = f"{purpose} needs the run's {split} images"
    found = {}
    for index, dataset in enumerate(config.data.datasets):
        try:
            source = open_source(dataset, split, dataset_id=index)
        except (DataError, OSError, ValueError) as err:
            raise ExportError(f"{need}: dataset '{dataset.name}' cannot be read "
                              f"({err})") from err
        paths = _coco_paths(source) if isinstance(source, CocoSource) else list(source.paths)
        if not paths:
            raise ExportError(f"{need}: dataset '{dataset.name}' lists none")
        found[dataset.name] = paths
    if not found:
        raise ExportError(f"{need}: its config lists no dataset")
    return found


def run_config(run: str) -> Any:
    """The `ExperimentConfig` of a run folder, without building its model.

    Raises:
        ConfigError: the folder has no config.
    """
    from train.run_dir import CONFIG_FILE, load_run_config  # pylint: disable=import-outside-toplevel  # Keras

    config_file = os.path.join(run, CONFIG_FILE)
    if not os.path.isfile(config_file):
        raise ConfigError(f"{run}: not a run folder ({CONFIG_FILE} missing)")
    return load_run_config(config_file)


def draw_images(per_dataset: Dict[str, List[str]], count: int,
                seed: int = CALIBRATION_SEED) -> List[str]:
    """Draws `count` images, in turn from each dataset, each dataset's without repeats.

    Args:
        per_dataset: `{dataset: [path, ...]}` from `split_images`.
        count: images wanted (fewer when the datasets hold fewer).
        seed: random seed; the same seed and lists give the same draw.

    Returns:
        The paths, interleaved across datasets.
    """
    rng = random.Random(seed)
    queues = []
    for name in sorted(per_dataset):
        paths = sorted(per_dataset[name])
        rng.shuffle(paths)
        queues.append(paths)
    drawn: List[str] = []
    while len(drawn) < count and any(queues):
        for queue in queues:
            if queue and len(drawn) < count:
                drawn.append(queue.pop())
    return drawn


def check_images(paths: Sequence[str]) -> None:
    """Raises `ExportError` naming the first of `paths` that is not a file."""
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ExportError(f"calibration image {missing[0]}{more} not found (the run's "
                          "training images must be where its config says)")


def calibration_reader(paths: Sequence[str], input_name: str = "images") -> Any:
    """An `onnxruntime.quantization.CalibrationDataReader` over image files.

    Each call to `get_next` decodes the next file and returns `{input_name: uint8
    [1, H, W, 3]}`; None after the last. `rewind` starts over; `set_range` limits it to
    a slice (ONNX Runtime's strided calibration).

    Args:
        paths: image files (checked to exist first).
        input_name: the model input.

    Returns:
        The reader.

    Raises:
        ExportError: a file is missing.
    """
    from onnxruntime.quantization import CalibrationDataReader  # pylint: disable=import-outside-toplevel

    check_images(paths)

    class _Reader(CalibrationDataReader):
        """Feeds the images one at a time."""

        def __init__(self) -> None:
            self.position, self.start, self.end = 0, 0, len(paths)

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            if self.position >= self.end:
                return None
            self.position += 1
            return {input_name: read_image(paths[self.position - 1])[None]}

        def rewind(self) -> None:
            self.position = self.start

        def set_range(self, start_index: int, end_index: int) -> None:
            self.start, self.end = start_index, min(end_index, len(paths))
            self.position = start_index

        def __len__(self) -> int:
            return len(paths)

    return _Reader()


def network_nodes(model: Any) -> List[str]:
    """Names of the `QUANTIZED_OPS` nodes from which a raw model output is reachable.

    Args:
        model: an `onnx.ModelProto` of `export.onnx`.

    Returns:
        Node names, in graph order.

    Raises:
        ExportError: the graph has no raw output (not exported by `export.onnx`?).
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    stack = [o.name for o in graph.output if o.name.endswith(RAW_SUFFIXES)]
    if not stack:
        raise ExportError("the ONNX graph has no raw output (<head>_class_logits, "
                          "<head>_logits): not an export.onnx file")
    seen: Set[str] = set()
    reached: Set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen or name not in producer:
            continue
        seen.add(name)
        node = producer[name]
        reached.add(node.name)
        stack.extend(node.input)
    return [n.name for n in graph.node if n.name in reached and n.op_type in QUANTIZED_OPS]


def _preprocess(source: str, target: str) -> str:
    """`quant_pre_process` into `target`; returns the file to quantise (`source` if it fails)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process  # pylint: disable=import-outside-toplevel

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(source, target, skip_symbolic_shape=True)
        return target
    except Exception:  # pylint: disable=broad-except  # optional step, any failure skips it
        return source


def quantize_file(fp32_path: str, out: str, reader: Any, scratch: str) -> int:
    """Quantises an fp32 `export.onnx` file into `out` (QDQ, see the module docstring).

    Args:
        fp32_path: the converted fp32 file.
        out: the int8 file to write.
        reader: the calibration data reader.
        scratch: a temporary folder.

    Returns:
        The number of nodes quantised.

    Raises:
        ExportError: ONNX Runtime's quantiser fails.
    """
    import onnx  # pylint: disable=import-outside-toplevel  # export only
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static  # pylint: disable=import-outside-toplevel

    source = _preprocess(fp32_path, os.path.join(scratch, "preprocessed.onnx"))
    nodes = network_nodes(onnx.load(source))
    try:
        quantize_static(source, out, reader, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_quantize=nodes,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        extra_options={"CalibStridedMinMax": calibration_stride(len(reader))})
    except ExportError:
        raise
    except Exception as err:  # pylint: disable=broad-except  # ORT raises many types
        raise ExportError(f"ONNX Runtime could not quantise the model "
                          f"({type(err).__name__}: {err})") from err
    return len(nodes)


def write_int8(graph: DetectionGraph, out: str, images: Sequence[str], *,
               opset: int = DEFAULT_OPSET, overwrite: bool = False) -> int:
    """Converts, quantises, checks in ONNX Runtime and writes `out` atomically, with sidecars.

    Args:
        graph: the graph (`with_raw=True`, as `export.onnx` builds it).
        out: the int8 `.onnx` file to create.
        images: calibration image files.
        opset: ONNX opset.
        overwrite: replace an existing `out` (and its sidecar files).

    Returns:
        The number of nodes quantised.

    Raises:
        ExportError: an existing output, a missing image, or a conversion, quantisation
            or check that fails (nothing is left behind then).
    """
    reader = calibration_reader(images)
    files = sidecar_files(graph, os.path.dirname(os.path.abspath(out)))
    check_class_files(files, overwrite)
    with tempfile.TemporaryDirectory(prefix="effdet_int8_") as scratch:
        fp32 = os.path.join(scratch, "fp32.onnx")
        convert(graph, fp32, opset)
        smoke_test(fp32, graph)
        with atomic_output(out, overwrite=overwrite) as tmp:
            count = quantize_file(fp32, tmp, reader, scratch)
            smoke_test(tmp, graph)
    write_class_files(files)
    return count


def export_int8(run: str, out: str, *, opset: int = DEFAULT_OPSET, weights: str = "final",
                overwrite: bool = False, image_size: Optional[int] = None,
                calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
                seed: int = CALIBRATION_SEED) -> Dict[str, Any]:
    """Exports a run folder's detector to a statically quantised int8 ONNX file.

    Args:
        run: the run folder.
        out: the `.onnx` file to create.
        opset: ONNX opset.
        weights: "final", "best" or "last".
        overwrite: replace an existing `out`.
        image_size: input side to export at; None keeps the run's.
        calibration_images: images drawn from the run's training splits.
        seed: seed of the draw.

    Returns:
        `{"out", "calibration_images", "quantized_nodes"}`.

    Raises:
        ConfigError: bad opset, run folder, image size or image count.
        ExportError: existing output, missing training images, or a failed conversion,
            quantisation or check.

    Example:
        >>> export_int8("runs/demo", "exports/demo_int8.onnx", calibration_images=64)
    """
    if calibration_images < 1:
        raise ConfigError(f"--calibration-images must be >= 1, got {calibration_images}")
    check_opset(opset)
    check_output(out, overwrite)
    images = draw_images(split_images(run_config(run)), calibration_images, seed)
    check_images(images)  # before the slow conversion
    graph, _ = load_graph(run, weights=weights, with_names=True, with_raw=True,
                          image_size=image_size)
    count = write_int8(graph, out, images, opset=opset, overwrite=overwrite)
    return {"out": out, "calibration_images": len(images), "quantized_nodes": count}
