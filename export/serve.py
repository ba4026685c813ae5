"""A REST inference service over an export: FastAPI on uvicorn, ONNX Runtime by default.

Usage:
    python -m export.serve --model EXPORT [--backend onnx|saved_model] [--name NAME]
        [--host 127.0.0.1] [--port 8080] [--max-batch 8] [--max-wait-ms 0]
        [--max-bytes 20971520] [--threads 0] [--workers 2]

`EXPORT` is a `.onnx` file, a SavedModel folder, or a folder holding `model.onnx`
and/or `saved_model/` (see `export.serve_model.find_export`). Endpoints:

- `POST /predict`: one image, multipart (field `file` or `image`) or a raw JPEG/PNG
  body; JSON per head (`?probabilities=1` adds every class probability), or the drawn
  image with `?draw=1` (`&format=jpeg` for JPEG instead of PNG).
- TensorFlow Serving REST: `GET /v1/models/NAME`, `GET /v1/models/NAME/metadata`,
  `POST /v1/models/NAME:predict` with `{"instances": [{"b64": ...}, ...]}`; each
  prediction holds the model's named outputs, as TensorFlow Serving returns them.
- KServe v2: `GET /v2/health/live`, `/v2/health/ready`, `/v2/models/NAME`,
  `/v2/models/NAME/ready`.
- `GET /`: a page to try an image in a browser.

Concurrent requests are micro-batched: the images that queued while the model was busy
(up to `--max-batch`, after waiting up to `--max-wait-ms` for more; 0 by default, so a lone
request never waits) go through the model together, one call per image size, in a worker
thread. The model loads in the background after start-up; until its warm-up call ends,
readiness is false and predictions answer 503. Errors are JSON `{"error": message}`.
"""
import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import os
import socket
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from effdet_tf.cli import make_parser, run_cli
from effdet_tf.errors import ConfigError, DataError, ExportError
from effdet_tf.quiet_tf import quiet_tensorflow
from export import serve_model
from export.serve_model import LOG, Batcher, ServeError
from export.serve_page import draw_result, render_page

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "application/octet-stream")
MAX_BYTES = 20 * 2 ** 20
DEFAULT_WORKERS = 2
WARM_UP = np.full((1, 64, 64, 3), 114, np.uint8)


def default_name(model_path: str) -> str:
    """The export folder's name: the `.onnx` file's folder, or the model folder (its
    parent for a folder called `saved_model`)."""
    path = os.path.abspath(model_path)
    if os.path.isfile(path) or os.path.basename(path) == serve_model.SAVED_MODEL_DIR:
        path = os.path.dirname(path)
    return os.path.basename(path) or "model"


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `max_bytes`."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise ServeError(413, f"the body has {length} bytes; the limit is {max_bytes}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ServeError(413, f"the body is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def image_bytes(request: Request, max_bytes: int) -> bytes:
    """The image of a `/predict` request: a multipart `file` / `image` field or the body."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "multipart/form-data" and media not in IMAGE_TYPES:
        raise ServeError(415, f"unsupported media type {media or '(none)'!r}: send "
                              f"multipart/form-data or one of {', '.join(IMAGE_TYPES)}")
    body = await read_body(request, max_bytes)
    if media != "multipart/form-data":
        return body

    async def replay() -> Dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        async with Request(request.scope, replay).form() as form:
            upload = form.get("file") or form.get("image")
            if not isinstance(upload, UploadFile):
                raise ServeError(422, "the multipart body has no file field 'file' or 'image'")
            return await upload.read()
    except HTTPException as err:  # python-multipart could not parse it
        raise ServeError(422, f"malformed multipart body ({err.detail})") from err


def b64_instances(body: bytes) -> List[bytes]:
    """The images of a TensorFlow Serving `{"instances": [{"b64": ...}, ...]}` body."""
    try:
        payload = json.loads(body)
    except ValueError as err:
        raise ServeError(422, f"malformed JSON ({err})") from err
    instances = payload.get("instances") if isinstance(payload, dict) else None
    if not isinstance(instances, list) or not instances:
        raise ServeError(422, 'expected {"instances": [{"b64": "<base64 image>"}, ...]}')
    images = []
    for i, instance in enumerate(instances):
        if isinstance(instance, dict) and isinstance(instance.get("images"), dict):
            instance = instance["images"]
        if not isinstance(instance, dict) or not isinstance(instance.get("b64"), str):
            raise ServeError(422, f'instance {i} is not {{"b64": "<base64 image>"}} '
                                  'or {"images": {"b64": ...}}')
        try:
            images.append(base64.b64decode(instance["b64"], validate=True))
        except binascii.Error as err:
            raise ServeError(400, f"instance {i}: invalid base64 ({err})") from err
    return images


async def decode(data: bytes) -> np.ndarray:
    """Decodes an image in a worker thread (400 when it is not one)."""
    try:
        return await run_in_threadpool(serve_model.decode_image, data)
    except DataError as err:
        raise ServeError(400, str(err)) from err


async def _load(app: FastAPI, threads: int) -> None:
    """Loads the model, runs the warm-up call and marks the app ready (in a thread)."""
    state = app.state
    loop = asyncio.get_running_loop()
    try:
        backend = await loop.run_in_executor(state.batcher.executor, serve_model.load_backend,
                                             state.export, threads)
        await loop.run_in_executor(state.batcher.executor, backend.run, WARM_UP)
    except Exception as err:  # pylint: disable=broad-except  # reported, server stays live
        state.load_error = f"cannot load {state.export.path}: {err}"
        LOG.error("%s", state.load_error)
        state.on_load_error()
        return
    state.backend = backend
    state.ready = True
    LOG.info("model %r (%s) is ready", state.name, state.export.backend)


def create_app(model_path: str, *, backend: Optional[str] = None, name: Optional[str] = None,
               max_batch: int = 8, max_wait_ms: float = 0.0, max_bytes: int = MAX_BYTES,
               threads: int = 0, workers: int = DEFAULT_WORKERS) -> FastAPI:
    """The service of one export; the model loads when the app starts (lifespan).

    Args:
        model_path: the export (see `serve_model.find_export`).
        backend: "onnx" or "saved_model"; None takes ONNX where the export has it.
        name: the model's name in the URLs (default: `default_name`).
        max_batch: most images per model call.
        max_wait_ms: longest wait for more images before a call (0: take what queued
            while the model was busy, never wait).
        max_bytes: largest request body.
        threads: ONNX Runtime intra-op threads (0: its default).
        workers: model calls in flight at once (`serve_model.Batcher`).

    Returns:
        The FastAPI app; `app.state.batcher` counts the model calls.

    Raises:
        ConfigError: bad settings, or no model of `backend` at `model_path`.
        ExportError: the export's sidecar files are missing or malformed.
    """
    if max_batch < 1 or max_wait_ms < 0 or max_bytes < 1 or workers < 1:
        raise ConfigError("--max-batch, --max-bytes and --workers must be >= 1, and "
                          "--max-wait-ms >= 0")
    export = serve_model.find_export(model_path, backend)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        def run(images: np.ndarray) -> Dict[str, np.ndarray]:
            return app.state.backend.run(images)

        app.state.batcher = Batcher(run, max_batch, max_wait_ms, workers)
        app.state.batcher.start()
        loading = asyncio.create_task(_load(app, threads))
        yield
        loading.cancel()
        await app.state.batcher.close()

    app = FastAPI(title="effdet_tf serving", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.export, app.state.backend, app.state.max_bytes = export, None, max_bytes
    app.state.name = name or default_name(model_path)
    app.state.ready, app.state.load_error, app.state.on_load_error = False, None, lambda: None
    _add_error_handlers(app)
    _add_routes(app)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as JSON `{"error": message}`."""

    async def serve_error(_: Request, err: ServeError) -> JSONResponse:
        return JSONResponse({"error": err.message}, err.status)

    async def http_error(_: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail)}, err.status_code)

    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        text = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        return JSONResponse({"error": text}, 422)

    app.add_exception_handler(ServeError, serve_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)


def _check(app: FastAPI, name: Optional[str] = None, loaded: bool = True) -> None:
    """404 for another model's name, 503 (with `loaded`) until the model is ready."""
    if name is not None and name != app.state.name:
        raise ServeError(404, f"no model {name!r} here; this server serves {app.state.name!r}")
    if loaded and not app.state.ready:
        raise ServeError(503, app.state.load_error or
                         f"model {app.state.name!r} is not loaded yet; retry shortly")


def _signature(tensors: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """TensorFlow Serving `TensorInfo`s of tensor descriptions."""
    return {t["name"]: {"dtype": "DT_" + {"FP32": "FLOAT", "BYTES": "STRING"}.get(
                            t["datatype"], t["datatype"]),
                        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in t["shape"]],
                                         "unknown_rank": False},
                        "name": t["name"]} for t in tensors}


def _add_routes(app: FastAPI) -> None:  # pylint: disable=too-many-locals  # one per endpoint
    """The endpoints (see the module docstring)."""
    state = app.state

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(render_page(state.name))

    @app.post("/predict")
    async def predict(request: Request, probabilities: bool = False, draw: bool = False,
                      image_format: str = Query("png", alias="format",
                                                pattern="^(png|jpeg)$")) -> Response:
        _check(app)
        image = await decode(await image_bytes(request, state.max_bytes))
        outputs = await state.batcher.predict(image)
        result = serve_model.image_result(state.export, outputs, probabilities=probabilities)
        if not draw:
            return JSONResponse(result)
        data, media = await run_in_threadpool(draw_result, image, result, image_format)
        return Response(data, media_type=media)

    @app.get("/v1/models/{name}")
    async def tfs_status(name: str) -> Dict[str, Any]:
        _check(app, name, loaded=False)
        state_name = "AVAILABLE" if state.ready else "END" if state.load_error else "LOADING"
        error = ("UNKNOWN", state.load_error) if state.load_error else ("OK", "")
        return {"model_version_status": [{"version": "1", "state": state_name, "status": {
            "error_code": error[0], "error_message": error[1]}}]}

    @app.get("/v1/models/{name}/metadata")
    async def tfs_metadata(name: str) -> Dict[str, Any]:
        _check(app, name)
        model = state.backend
        signature = {"inputs": _signature(model.inputs), "outputs": _signature(model.outputs),
                     "method_name": "tensorflow/serving/predict"}
        return {"model_spec": {"name": name, "signature_name": "", "version": "1"},
                "metadata": {"signature_def": {"signature_def": {
                    "serving_default": signature}}}}

    @app.post("/v1/models/{name}:predict")
    async def tfs_predict(name: str, request: Request) -> Dict[str, Any]:
        _check(app, name)
        images = [await decode(data)
                  for data in b64_instances(await read_body(request, state.max_bytes))]
        outputs = await asyncio.gather(*(state.batcher.predict(image) for image in images))
        return {"predictions": [serve_model.tensor_outputs(out) for out in outputs]}

    @app.get("/v2/health/live")
    async def live() -> Dict[str, Any]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> Dict[str, Any]:
        _check(app)
        return {"ready": True}

    @app.get("/v2/models/{name}")
    async def model_metadata(name: str) -> Dict[str, Any]:
        _check(app, name)
        model = state.backend
        return {"name": name, "versions": ["1"], "platform": model.platform,
                "inputs": model.inputs, "outputs": model.outputs}

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> Dict[str, Any]:
        _check(app, name)
        return {"name": name, "ready": True}


def listen_socket(host: str, port: int) -> socket.socket:
    """A socket bound to `host:port` (port 0: a free one), for uvicorn to listen on.

    Raises:
        ConfigError: the address cannot be resolved or bound (for example in use).
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port,
                                                             type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as err:
        raise ConfigError(f"cannot listen on {host}:{port} ({err.strerror or err})") from err
    return sock


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = make_parser("python -m export.serve",
                         description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--model", required=True,
                        help=".onnx file, SavedModel folder, or folder holding model.onnx "
                             "and/or saved_model/")
    parser.add_argument("--backend", choices=serve_model.BACKENDS, default=None,
                        help="runtime (default: onnx where the export has it)")
    parser.add_argument("--name", default=None,
                        help="model name in the URLs (default: the export folder's name)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on")
    parser.add_argument("--max-batch", type=int, default=8, help="most images per model call")
    parser.add_argument("--max-wait-ms", type=float, default=0.0,
                        help="longest wait for more images before a model call (0: batch "
                             "what queued while the model was busy; a lone request never "
                             "waits)")
    parser.add_argument("--max-bytes", type=int, default=MAX_BYTES,
                        help="largest request body (413 above)")
    parser.add_argument("--threads", type=int, default=0,
                        help="ONNX Runtime intra-op threads; 0, the default: one per core")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help="model calls in flight at once (each batches what queued)")
    parser.add_argument("--log-level", default="info", help="uvicorn's log level",
                        choices=("critical", "error", "warning", "info", "debug"))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the CLI: serves until interrupted (Ctrl+C drains pending requests first).

    Args:
        argv: arguments (default `sys.argv[1:]`).

    Returns:
        Exit code 0.

    Raises:
        ConfigError: a bad option, model path or address.
        ExportError: the model does not load.
    """
    args = build_parser().parse_args(argv)
    app = create_app(args.model, backend=args.backend, name=args.name,
                     max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                     max_bytes=args.max_bytes, threads=args.threads, workers=args.workers)
    if app.state.export.backend == "saved_model":
        quiet_tensorflow()  # TensorFlow's start-up lines stay off
    sock = listen_socket(args.host, args.port)
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level))
    app.state.on_load_error = lambda: setattr(server, "should_exit", True)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {app.state.name!r} ({app.state.export.backend}: {app.state.export.path}) "
          f"at http://{host}:{sock.getsockname()[1]}/", flush=True)
    server.run(sockets=[sock])
    if app.state.load_error:
        raise ExportError(app.state.load_error)
    return 0


if __name__ == "__main__":
    run_cli(main)
