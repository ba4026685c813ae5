"""The model behind `export.serve`: finding an export, its two backends, micro-batching
and the per-image JSON made from the outputs.

An export is the ONNX file or SavedModel of `export.onnx` / `export.saved_model` with its
sidecar files (`preprocessing.json`, `<head>_classes.txt`). `find_export` accepts a
`.onnx` file, a SavedModel folder or a folder holding `model.onnx` and/or `saved_model/`.
The ONNX backend needs ONNX Runtime only: nothing here imports TensorFlow unless the
SavedModel backend is chosen.
"""
import asyncio
import dataclasses
import io
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from effdet_tf.errors import ConfigError, DataError, EffdetError, ExportError

BACKENDS = ("onnx", "saved_model")
ONNX_FILE = "model.onnx"
SAVED_MODEL_DIR = "saved_model"
PREPROCESSING_FILE = "preprocessing.json"
_DTYPES = {"uint8": "UINT8", "float": "FP32", "float32": "FP32", "int32": "INT32",
           "int64": "INT64", "string": "BYTES"}
LOG = logging.getLogger("uvicorn.error")


class ServeError(EffdetError):
    """A request that cannot be answered: HTTP `status` and a one-line `message`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass(frozen=True)
class Head:
    """One head of an export: `kind`, class names in output order, its output names and,
    for a multilabel head, the per-tag thresholds."""

    name: str
    kind: str
    classes: List[str]
    outputs: List[str]
    thresholds: Optional[List[float]] = None


@dataclasses.dataclass(frozen=True)
class Export:
    """A located export: the file or folder a backend opens and what the sidecars say."""

    path: str
    backend: str
    heads: List[Head]
    image_size: int
    preprocessing: Dict[str, Any]

    @property
    def output_names(self) -> List[str]:
        """Every output the heads declare, in head order."""
        return [name for head in self.heads for name in head.outputs]


def _candidates(path: str) -> Dict[str, str]:
    """`{backend: path}` of what `path` holds."""
    if os.path.isfile(path) and path.endswith(".onnx"):
        return {"onnx": path}
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return {"saved_model": path}
    found = {}
    if os.path.isfile(os.path.join(path, ONNX_FILE)):
        found["onnx"] = os.path.join(path, ONNX_FILE)
    if os.path.isfile(os.path.join(path, SAVED_MODEL_DIR, "saved_model.pb")):
        found["saved_model"] = os.path.join(path, SAVED_MODEL_DIR)
    return found


def find_export(path: str, backend: Optional[str] = None) -> Export:
    """Locates the model file or folder of an export and reads its sidecar files.

    Args:
        path: a `.onnx` file, a SavedModel folder, or a folder holding `model.onnx`
            and/or `saved_model/`.
        backend: "onnx" or "saved_model"; None takes ONNX where there is one.

    Returns:
        The `Export`.

    Raises:
        ConfigError: an unknown backend, or `path` holds no model of that backend.
        ExportError: the sidecar files are missing or malformed.
    """
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if not os.path.exists(path):
        raise ConfigError(f"--model {path} does not exist")
    found = _candidates(path)
    if not found:
        raise ConfigError(f"--model {path} is neither a .onnx file, a SavedModel folder nor a "
                          f"folder holding {ONNX_FILE} or {SAVED_MODEL_DIR}/")
    backend = backend or ("onnx" if "onnx" in found else "saved_model")
    if backend not in found:
        raise ConfigError(f"--model {path} holds no {backend} model (found: "
                          f"{', '.join(sorted(found))}); pass --backend {next(iter(found))}")
    model = found[backend]
    folder = model if backend == "saved_model" else os.path.dirname(os.path.abspath(model))
    sidecar = os.path.join(folder, PREPROCESSING_FILE)
    try:
        settings = json.loads(read_sidecar(sidecar))
        heads = [Head(name, entry["kind"], read_sidecar(os.path.join(
                          folder, entry["classes_file"])).splitlines(),
                      list(entry["outputs"]), entry.get("thresholds"))
                 for name, entry in settings["heads"].items()]
        size = int(settings["letterbox"]["image_size"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ExportError(f"{sidecar} is malformed ({type(err).__name__}: {err}); "
                          "export the run again") from err
    return Export(model, backend, heads, size, settings)


def read_sidecar(path: str) -> str:
    """The text of a file beside the model (ExportError when it is missing)."""
    try:
        with open(path, encoding="utf-8") as stream:
            return stream.read()
    except OSError as err:
        raise ExportError(f"cannot read {path} ({err.strerror}); export the run again") from err


def _tensor(name: str, dtype: str, shape: Sequence[Any]) -> Dict[str, Any]:
    """A tensor description: `{name, datatype, shape}` with -1 for free dimensions."""
    return {"name": name, "datatype": _DTYPES.get(dtype, dtype.upper()),
            "shape": [d if isinstance(d, int) and d >= 0 else -1 for d in shape]}


class OnnxBackend:  # pylint: disable=too-few-public-methods  # one call and its metadata
    """An ONNX file in ONNX Runtime on the CPU (`threads` intra-op threads, 0 = default)."""

    platform = "onnxruntime_onnx"

    def __init__(self, export: Export, threads: int = 0) -> None:
        import onnxruntime as ort  # pylint: disable=import-outside-toplevel  # optional runtime

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Images of any size make every call a new shape: ONNX Runtime's per-shape memory
        # patterns and its arena (which never shrinks) then grow with each new size. Off,
        # a household load test's resident memory settled at about 460 MiB instead of
        # climbing past 700 MiB in 4,000 requests, at the same throughput.
        options.enable_mem_pattern = False
        options.enable_cpu_mem_arena = False
        try:
            self.session = ort.InferenceSession(export.path, sess_options=options,
                                                providers=["CPUExecutionProvider"])
        except Exception as err:  # pylint: disable=broad-except  # ORT raises many types
            raise ExportError(f"ONNX Runtime cannot load {export.path} ({err})") from err
        first = self.session.get_inputs()[0]
        available = {out.name: out for out in self.session.get_outputs()}
        self.input_name = first.name
        self.output_names = [n for n in export.output_names if n in available]
        self.inputs = [_tensor(first.name, first.type[7:-1], first.shape)]
        self.outputs = [_tensor(n, available[n].type[7:-1], available[n].shape)
                        for n in self.output_names]

    def run(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        """The outputs of a uint8 `[B, H, W, 3]` batch."""
        values = self.session.run(self.output_names, {self.input_name: images})
        return dict(zip(self.output_names, values))


class SavedModelBackend:  # pylint: disable=too-few-public-methods  # one call and its metadata
    """The `serving_default` signature of a SavedModel in TensorFlow."""

    platform = "tensorflow_savedmodel"

    def __init__(self, export: Export, threads: int = 0) -> None:
        del threads  # TensorFlow's thread pools are process-wide
        import tensorflow as tf  # pylint: disable=import-outside-toplevel  # this backend only

        try:
            self.function = tf.saved_model.load(export.path).signatures["serving_default"]
        except Exception as err:  # pylint: disable=broad-except  # TF raises many types
            raise ExportError(f"TensorFlow cannot load {export.path} ({err})") from err
        self.tf = tf
        specs = self.function.structured_outputs
        self.output_names = [n for n in export.output_names if n in specs]
        spec = next(iter(self.function.structured_input_signature[1].values()))
        self.input_name = spec.name or "images"
        self.inputs = [_tensor(self.input_name, spec.dtype.name, spec.shape.as_list())]
        self.outputs = [_tensor(n, specs[n].dtype.name, specs[n].shape.as_list())
                        for n in self.output_names]

    def run(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        """The outputs of a uint8 `[B, H, W, 3]` batch."""
        out = self.function(**{self.input_name: self.tf.constant(images)})
        return {n: out[n].numpy() for n in self.output_names}


def load_backend(export: Export, threads: int = 0) -> Any:
    """Opens an export in its backend (`OnnxBackend` or `SavedModelBackend`).

    Raises:
        ExportError: the runtime cannot load the model.
    """
    backend = OnnxBackend if export.backend == "onnx" else SavedModelBackend
    return backend(export, threads)


def decode_image(data: bytes) -> np.ndarray:
    """Decodes JPEG, PNG or any image Pillow reads, upright (EXIF applied), to RGB uint8.

    Raises:
        DataError: the bytes are not a readable image.
    """
    if not data:
        raise DataError("the request holds no image (empty body)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    except UnidentifiedImageError as err:
        raise DataError("cannot decode the image: not a format Pillow reads (JPEG, PNG, "
                        "WebP, BMP, ...)") from err
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot decode the image ({err})") from err


def _text(value: Any) -> Any:
    """A JSON value of one output element (strings decoded, numpy scalars made Python)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value.item() if hasattr(value, "item") else value


def tensor_outputs(outputs: Dict[str, np.ndarray]) -> Dict[str, Any]:
    """One image's outputs as JSON lists, as TensorFlow Serving's REST API returns them."""
    return {name: np.vectorize(_text, otypes=[object])(value).tolist()
            if value.dtype == object else value.tolist() for name, value in outputs.items()}


def _head_result(head: Head, out: Dict[str, np.ndarray], probabilities: bool) -> Dict[str, Any]:
    """The JSON of one head of one image; `out` maps output keys without the head prefix."""
    entry: Dict[str, Any] = {"kind": head.kind}
    if head.kind == "detection":
        count = int(out["num_detections"])
        entry["detections"] = [
            {"box": [float(v) for v in box], "class": head.classes[int(c)], "class_id": int(c),
             "score": float(s)}
            for box, c, s in zip(out["boxes"][:count], out["classes"][:count],
                                 out["scores"][:count])]
    elif head.kind == "classification":
        entry["top_k"] = [{"class": head.classes[int(c)], "class_id": int(c),
                           "probability": float(p)}
                          for c, p in zip(out["top_classes"], out["top_scores"])]
        if probabilities:
            entry["probabilities"] = dict(zip(head.classes, map(float, out["probabilities"])))
    elif head.kind == "multilabel":
        probs = [float(p) for p in out["probabilities"]]
        entry["tags"] = [{"tag": name, "probability": p}
                         for name, p, on in zip(head.classes, probs, out["tags"]) if on]
        entry["probabilities"] = dict(zip(head.classes, probs))
    return entry


def image_result(export: Export, outputs: Dict[str, np.ndarray], *,
                 probabilities: bool = False) -> Dict[str, Any]:
    """The JSON of one image from its outputs (each without the batch dimension).

    Args:
        export: the export (heads, class names).
        outputs: `{output name: array}` of the image.
        probabilities: also give every class probability of classification heads.

    Returns:
        `{head: {"kind", ...}}`: detection heads `detections` `[{box, class, class_id,
        score}]` (xyxy input pixels), classification heads `top_k` `[{class, class_id,
        probability}]`, multilabel heads `tags` `[{tag, probability}]` over their
        threshold and `probabilities` `{tag: p}`.
    """
    result = {}
    for head in export.heads:
        prefix = f"{head.name}_"
        out = {key[len(prefix):]: value for key, value in outputs.items()
               if key.startswith(prefix)}
        result[head.name] = _head_result(head, out, probabilities)
    return result


class Batcher:
    """Micro-batches concurrent images: one model call per group of same-sized images.

    A group is collected when a worker is free, so images that queued while every worker
    was busy form the next batch. With several workers, calls run at once in as many
    threads (ONNX Runtime and TensorFlow sessions take concurrent calls): on a CPU a small
    model uses its cores better two calls at a time than one.

    Args:
        run: the model, uint8 `[B, H, W, 3]` -> `{output: [B, ...]}` (run in a thread).
        max_batch: most images per collected group.
        max_wait_ms: longest wait for more images after the first one arrived.
        workers: model calls in flight at most.

    Attributes:
        calls: model calls so far; `batch_sizes` the batch size of each.
    """

    def __init__(self, run: Callable[[np.ndarray], Dict[str, np.ndarray]], max_batch: int,
                 max_wait_ms: float, workers: int = 1) -> None:
        self.run = run
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.workers = workers
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="effdet-serve")
        self.queue: asyncio.Queue = asyncio.Queue()
        self.calls = 0
        self.batch_sizes: List[int] = []
        self.closed = False
        self._task: Optional[asyncio.Task] = None

    def start(self) -> None:
        """Starts the worker on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def predict(self, image: np.ndarray) -> Dict[str, np.ndarray]:
        """The outputs of one RGB uint8 `[H, W, 3]` image, without the batch dimension."""
        if self.closed:
            raise ServeError(503, "the server is shutting down")
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((image, future))
        return await future

    async def close(self) -> None:
        """Answers every queued image, then stops the worker and its thread."""
        self.closed = True
        self.queue.put_nowait(None)
        if self._task is not None:
            await self._task
        self.executor.shutdown(wait=True)

    async def _collect(self) -> List[Any]:
        """The next group: the first item, then more until full or the wait is over."""
        items = [await self.queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while items[-1] is not None and len(items) < self.max_batch:
            try:
                items.append(self.queue.get_nowait())
            except asyncio.QueueEmpty:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
        return items

    async def _work(self) -> None:
        """Collects groups when a worker is free and runs them until `close`."""
        free = asyncio.Semaphore(self.workers)
        running: set = set()
        while True:
            await free.acquire()  # collect only when a call can start
            items = await self._collect()
            stop = items[-1] is None
            groups: Dict[tuple, list] = {}
            for image, future in (item for item in items if item is not None):
                groups.setdefault(image.shape, []).append((image, future))
            for index, group in enumerate(groups.values()):
                if index:
                    await free.acquire()
                task = asyncio.get_running_loop().create_task(self._run_group(group))
                running.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(lambda _: free.release())
            if not groups:
                free.release()
            if stop:
                await asyncio.gather(*running)
                return

    async def _run_group(self, group: List[Any]) -> None:
        """One model call on a group of same-sized images; sets each image's future."""
        batch = np.stack([image for image, _ in group])
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self.executor, self.run,
                                                                        batch)
        except Exception as err:  # pylint: disable=broad-except  # every waiter gets it
            LOG.error("model call failed: %s: %s", type(err).__name__, err)
            for _, future in group:
                if not future.done():
                    future.set_exception(ServeError(500, f"the model failed ({err})"))
            return
        self.calls += 1
        self.batch_sizes.append(len(group))
        for i, (_, future) in enumerate(group):
            if not future.done():  # a client that went away leaves a cancelled future
                future.set_result({name: value[i] for name, value in outputs.items()})
