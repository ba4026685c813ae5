"""Tests of `export.serve`: the REST service over an export, through real HTTP.

One tiny run (a stand-in backbone, like tests/test_export.py) with a detection, a
classification and a multilabel head is exported once per module to ONNX and to a
SavedModel in the same folder. Each server is the real app on uvicorn, on a free
loopback port in a background thread; requests go through httpx. The browser test drives
the page in headless Chromium (Debian's `chromium` and `chromium-driver`); it skips
without them unless `EFFDET_REQUIRE_BROWSER=1`.
"""
import asyncio
import base64
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import types

import httpx
import keras
import numpy as np
import onnxruntime as ort
import pytest
import uvicorn
from PIL import Image, ImageDraw

import effdet_tf.backbones.cspdarknet53 as csp
from effdet_tf.cli import run_cli
from effdet_tf.config import config_from_dict, dump_config
from effdet_tf.errors import ConfigError, ExportError
from export import serve, serve_model
from export.graph import load_graph
from export.onnx import write_onnx
from export.saved_model import write_saved_model
from export.serve_model import Batcher, ServeError
from tests.backbones import tiny_backbone
from tests.test_export import spread_outputs
from train.run_dir import build_model

CLASSES = {"fruits": {"names": ["apple", "banana", "orange"], "category_ids": [1, 2, 3]},
           "shape": {"names": ["circle", "square", "triangle"]},
           "tags": {"names": ["red", "round", "shiny", "striped"]}}
THRESHOLDS = [0.01, 0.99, 0.5, 0.5]
LOGIT_BIASES = {"shape": [1.0, 0.0, -1.0], "tags": [2.0, -2.0, 0.5, -0.5]}
NAME = "export"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


class _DetectionHeads:  # pylint: disable=too-few-public-methods  # a model seen by spread_outputs
    """The model as `tests.test_export.spread_outputs` sees it: its detection heads only."""

    def __init__(self, model) -> None:
        self.model, self.weights, self.image_size = model, model.weights, model.image_size
        self.head_names = ["fruits"]

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs)


def make_run(folder: str) -> str:
    """A run folder (config, classes, last checkpoint) of three heads, one of each kind."""
    cfg = config_from_dict({
        "name": "serve_test",
        "heads": [{"name": "fruits"}, {"name": "shape", "kind": "classification"},
                  {"name": "tags", "kind": "multilabel"}],
        "data": {"image_size": 128, "datasets": [
            {"name": "fruits", "root": "unused/fruits", "heads": ["fruits"]},
            {"name": "shapes", "format": "image_folder", "root": "unused/shapes",
             "heads": ["shape"]},
            {"name": "tags", "format": "table", "root": "unused/tags", "table": "labels.csv",
             "heads": ["tags"]}]},
        "model": {"fpn_channels": 16, "fpn_cells": 1, "head_layers": 1},
        "eval": {"max_detections": 6, "score_threshold": 0.3, "iou_threshold": 0.5}})
    os.makedirs(os.path.join(folder, "checkpoints"))
    with open(os.path.join(folder, "config.yaml"), "w", encoding="utf-8") as stream:
        stream.write(dump_config(cfg))
    with open(os.path.join(folder, "classes.json"), "w", encoding="utf-8") as stream:
        json.dump(CLASSES, stream)
    keras.utils.set_random_seed(1)
    model = build_model(cfg, CLASSES)
    spread_outputs(_DetectionHeads(model), seed=1)
    for var in model.weights:  # distinct image-level probabilities, not all 1/C
        for head, bias in LOGIT_BIASES.items():
            if var.path.endswith(f"{head}_logits/bias"):
                var.assign(np.asarray(bias, np.float32))
    model.task_heads["tags"].set_thresholds(THRESHOLDS)
    model.save_weights(os.path.join(folder, "checkpoints", "last.weights.h5"))
    return folder


@pytest.fixture(name="export_dir", scope="module")
def fixture_export_dir(tmp_path_factory):
    """An export folder holding `model.onnx` and `saved_model/` with their sidecars."""
    root = tmp_path_factory.mktemp("serve")
    folder = str(root / NAME)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csp, "build_cspdarknet53", tiny_backbone)
        graph, _ = load_graph(make_run(str(root / "run")), weights="last", with_raw=True)
        write_onnx(graph, os.path.join(folder, "model.onnx"))
        write_saved_model(graph, os.path.join(folder, "saved_model"))
    return folder


@contextlib.contextmanager
def running(app):
    """Serves `app` with uvicorn on a free loopback port; yields its base URL."""
    sock = serve.listen_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    for _ in range(400):
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url + "/v2/health/live").status_code == 200:
                break
        time.sleep(0.05)
    app.state.server = server
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "the server did not stop"


def wait_ready(url: str, seconds: float = 60) -> None:
    """Polls `/v2/health/ready` until 200."""
    deadline = time.monotonic() + seconds
    while httpx.get(url + "/v2/health/ready").status_code != 200:
        assert time.monotonic() < deadline, "the model did not become ready"
        time.sleep(0.05)


@pytest.fixture(name="server", scope="module")
def fixture_server(export_dir):
    """The ONNX service of the export: `(url, app)`."""
    # One worker: the batching tests count the calls of a single collecting loop.
    app = serve.create_app(export_dir, max_wait_ms=100, threads=1, workers=1)
    with running(app) as url:
        wait_ready(url)
        yield types.SimpleNamespace(url=url, app=app)


def picture(width: int = 160, height: int = 120, seed: int = 0) -> np.ndarray:
    """An RGB test image: noise with a few filled shapes."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (height, width, 3), np.uint8))
    pen = ImageDraw.Draw(img)
    pen.ellipse([width * 0.1, height * 0.2, width * 0.45, height * 0.7], fill=(220, 40, 40))
    pen.rectangle([width * 0.55, height * 0.3, width * 0.9, height * 0.9], fill=(40, 60, 220))
    return np.asarray(img)


def encode(image: np.ndarray, fmt: str = "PNG") -> bytes:
    """The image as PNG or JPEG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


def direct(export_dir: str, image: np.ndarray) -> dict:
    """The ONNX Runtime outputs of one image, called directly (batch of one)."""
    session = ort.InferenceSession(os.path.join(export_dir, "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    names = [out.name for out in session.get_outputs()]
    return {n: v[0] for n, v in zip(names, session.run(None, {"images": image[None]}))}


def check_against(result: dict, ref: dict) -> None:
    """`/predict` JSON equals the direct outputs within 1e-4, for every head."""
    count = int(ref["fruits_num_detections"])
    dets = result["fruits"]["detections"]
    assert 0 < count == len(dets), "no detections: the comparison is vacuous"
    np.testing.assert_allclose([d["box"] for d in dets], ref["fruits_boxes"][:count], atol=1e-4)
    np.testing.assert_allclose([d["score"] for d in dets], ref["fruits_scores"][:count],
                               atol=1e-4)
    assert [d["class"] for d in dets] == [CLASSES["fruits"]["names"][c]
                                          for c in ref["fruits_classes"][:count]]
    top = result["shape"]["top_k"]
    assert [t["class_id"] for t in top] == list(ref["shape_top_classes"])
    np.testing.assert_allclose([t["probability"] for t in top], ref["shape_top_scores"],
                               atol=1e-4)
    probs = result["tags"]["probabilities"]
    np.testing.assert_allclose([probs[t] for t in CLASSES["tags"]["names"]],
                               ref["tags_probabilities"], atol=1e-4)
    on = [t for t, flag in zip(CLASSES["tags"]["names"], ref["tags_tags"]) if flag]
    assert [t["tag"] for t in result["tags"]["tags"]] == on
    assert on == ["red", "shiny"]  # the thresholds reached the export
    assert top[0]["class"] == "circle" and top[0]["probability"] > 0.5


def test_find_export_forms_and_errors(export_dir, tmp_path, capsys):
    """A .onnx file, a SavedModel folder or an export folder; anything else one line."""
    onnx_file = os.path.join(export_dir, "model.onnx")
    saved = os.path.join(export_dir, "saved_model")
    assert serve_model.find_export(export_dir).path == onnx_file
    assert serve_model.find_export(onnx_file).backend == "onnx"
    assert serve_model.find_export(saved).backend == "saved_model"
    found = serve_model.find_export(export_dir, "saved_model")
    assert found.path == saved and found.image_size == 128
    assert [(h.name, h.kind) for h in found.heads] == [
        ("fruits", "detection"), ("shape", "classification"), ("tags", "multilabel")]
    assert found.heads[0].classes == CLASSES["fruits"]["names"]
    assert found.heads[2].thresholds == THRESHOLDS
    assert serve.default_name(onnx_file) == serve.default_name(saved) == NAME
    with pytest.raises(ConfigError, match="does not exist"):
        serve_model.find_export(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="neither a .onnx file"):
        serve_model.find_export(str(tmp_path))
    with pytest.raises(ConfigError, match="holds no saved_model model"):
        serve_model.find_export(onnx_file, "saved_model")
    with pytest.raises(ConfigError, match="--backend must be"):
        serve_model.find_export(export_dir, "tflite")
    shutil.copy(onnx_file, tmp_path / "model.onnx")
    with pytest.raises(ExportError, match="preprocessing.json"):
        serve.create_app(str(tmp_path))
    taken = serve.listen_socket("127.0.0.1", 0)
    taken.listen()
    with pytest.raises(ConfigError, match="cannot listen on 127.0.0.1:"):
        serve.listen_socket("127.0.0.1", taken.getsockname()[1])
    taken.close()
    with pytest.raises(SystemExit) as stop:
        run_cli(serve.main, ["--model", str(tmp_path / "missing")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --model") and "\n" not in err


def test_predict_equals_onnx_runtime(server, export_dir):
    """Raw PNG and multipart JPEG bodies; every head's JSON equals ONNX Runtime's outputs."""
    image = picture()
    response = httpx.post(server.url + "/predict?probabilities=1", content=encode(image),
                          headers={"Content-Type": "image/png"}, timeout=60)
    assert response.status_code == 200, response.text
    result = response.json()
    check_against(result, direct(export_dir, image))
    assert set(result["shape"]["probabilities"]) == set(CLASSES["shape"]["names"])
    jpeg = encode(image, "JPEG")
    decoded = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    for field in ("file", "image"):
        response = httpx.post(server.url + "/predict", files={field: ("x.jpg", jpeg)},
                              timeout=60)
        assert response.status_code == 200, response.text
        check_against(response.json(), direct(export_dir, decoded))
        assert "probabilities" not in response.json()["shape"]


def test_draw_returns_an_annotated_image(server):
    """`?draw=1` gives a PNG (JPEG with format=jpeg): enlarged, boxes and a label strip."""
    image = picture()
    for fmt, media in (("png", "image/png"), ("jpeg", "image/jpeg")):
        response = httpx.post(f"{server.url}/predict?draw=1&format={fmt}",
                              content=encode(image), headers={"Content-Type": "image/png"},
                              timeout=60)
        assert response.status_code == 200 and response.headers["content-type"] == media
        drawn = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
        assert drawn.shape[1] == 320 and drawn.shape[0] > 240  # x2, then the label strip
        colour_box = np.all(drawn[:240] == (230, 25, 75), axis=-1).sum()
        assert fmt == "jpeg" or colour_box > 100  # fruits boxes in the first head's colour


def test_tensorflow_serving_rest(server, export_dir):
    """Status, metadata and predict in TensorFlow Serving's shapes; other names 404."""
    url = f"{server.url}/v1/models/{NAME}"
    status = httpx.get(url).json()["model_version_status"][0]
    assert status == {"version": "1", "state": "AVAILABLE",
                      "status": {"error_code": "OK", "error_message": ""}}
    signature = httpx.get(url + "/metadata").json()["metadata"]["signature_def"][
        "signature_def"]["serving_default"]
    assert signature["inputs"]["images"]["dtype"] == "DT_UINT8"
    assert [d["size"] for d in signature["inputs"]["images"]["tensor_shape"]["dim"]] == [
        "-1", "-1", "-1", "3"]
    assert signature["outputs"]["fruits_boxes"]["dtype"] == "DT_FLOAT"
    assert signature["outputs"]["shape_top_names"]["dtype"] == "DT_STRING"
    images = [picture(), picture(seed=1)]
    blobs = [base64.b64encode(encode(im)).decode() for im in images]
    body = {"instances": [{"b64": blobs[0]}, {"images": {"b64": blobs[1]}}]}
    response = httpx.post(url + ":predict", json=body, timeout=60)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 2
    for prediction, image in zip(predictions, images):
        ref = direct(export_dir, image)
        np.testing.assert_allclose(prediction["fruits_boxes"], ref["fruits_boxes"], atol=1e-4)
        assert prediction["shape_top_names"] == [str(n) for n in ref["shape_top_names"]]
        assert prediction["tags_tags"] == ref["tags_tags"].tolist()
    for path in ("/v1/models/other", "/v1/models/other/metadata", "/v2/models/other",
                 "/v2/models/other/ready"):
        response = httpx.get(server.url + path)
        assert response.status_code == 404 and "other" in response.json()["error"], path
    response = httpx.post(server.url + "/v1/models/other:predict", json=body)
    assert response.status_code == 404


def test_kserve_v2_health_and_metadata(server):
    """Live, ready, model metadata (inputs, outputs, platform) and model readiness."""
    assert httpx.get(server.url + "/v2/health/live").json() == {"live": True}
    assert httpx.get(server.url + "/v2/health/ready").json() == {"ready": True}
    meta = httpx.get(f"{server.url}/v2/models/{NAME}").json()
    assert meta["name"] == NAME and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}]
    outputs = {o["name"]: o for o in meta["outputs"]}
    assert outputs["fruits_boxes"]["shape"] == [-1, 6, 4]
    assert outputs["tags_tags"]["datatype"] == "INT32"
    assert "fruits_class_logits" not in outputs  # the raw outputs are not served
    ready = httpx.get(f"{server.url}/v2/models/{NAME}/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_request_errors_are_json(server):
    """415, 400, 422 and 404 answers, each `{"error": ...}`."""
    png = encode(picture())
    cases = [
        ("/predict", {"content": b"text", "headers": {"Content-Type": "text/plain"}}, 415),
        ("/predict", {"content": png}, 415),  # no content type at all
        ("/predict", {"content": b"not an image", "headers": {"Content-Type": "image/png"}},
         400),
        ("/predict", {"content": b"", "headers": {"Content-Type": "image/jpeg"}}, 400),
        ("/predict", {"files": {"other": ("x.png", png)}}, 422),
        ("/predict?draw=1&format=gif", {"content": png,
                                        "headers": {"Content-Type": "image/png"}}, 422),
        (f"/v1/models/{NAME}:predict", {"content": b"{not json"}, 422),
        (f"/v1/models/{NAME}:predict", {"json": {"instances": [[1, 2, 3]]}}, 422),
        (f"/v1/models/{NAME}:predict", {"json": {"inputs": {"b64": "x"}}}, 422),
        (f"/v1/models/{NAME}:predict", {"json": {"instances": [{"b64": "%%%"}]}}, 400),
        (f"/v1/models/{NAME}:predict", {"json": {"instances": [{"b64": "aGVsbG8="}]}}, 400),
        ("/no/such/path", {"content": png}, 404)]
    for path, kwargs, code in cases:
        response = httpx.post(server.url + path, timeout=60, **kwargs)
        assert response.status_code == code, (path, kwargs.keys(), response.text)
        assert isinstance(response.json()["error"], str) and response.json()["error"]


def test_concurrent_requests_are_batched(server, export_dir):
    """8 simultaneous requests take fewer model calls than 8, each with its own answer."""
    images = [picture(seed=i) for i in range(8)]
    barrier = threading.Barrier(len(images))
    results = [None] * len(images)
    batcher = server.app.state.batcher
    calls, sizes = batcher.calls, len(batcher.batch_sizes)

    def ask(i: int) -> None:
        barrier.wait()
        results[i] = httpx.post(server.url + "/predict", content=encode(images[i]),
                                headers={"Content-Type": "image/png"}, timeout=120)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.status_code == 200 for r in results)
    assert batcher.calls - calls < len(images)
    assert max(batcher.batch_sizes[sizes:]) > 1 and sum(batcher.batch_sizes[sizes:]) == 8
    for i in (0, 7):  # batched rows land with their own request
        check_against(results[i].json(), direct(export_dir, images[i]))


def test_batcher_groups_by_size_and_reports_failures():
    """One model call per image size in a group; a failing model answers 500 to all."""
    calls = []

    def model(images):
        calls.append(images.shape)
        return {"sum": images.reshape(len(images), -1).sum(axis=1)}

    async def scenario():
        batcher = Batcher(model, max_batch=8, max_wait_ms=200)
        batcher.start()
        images = [np.full((4 + i % 2, 6, 3), i, np.uint8) for i in range(6)]
        results = await asyncio.gather(*(batcher.predict(im) for im in images))
        batcher.run = lambda images: 1 / 0
        with pytest.raises(ServeError) as failed:
            await batcher.predict(images[0])
        await batcher.close()
        with pytest.raises(ServeError) as closed:
            await batcher.predict(images[0])
        return images, results, failed.value, closed.value

    images, results, failed, closed = asyncio.run(scenario())
    assert sorted(calls) == [(3, 4, 6, 3), (3, 5, 6, 3)]
    assert [int(r["sum"]) for r in results] == [int(im.sum()) for im in images]
    assert failed.status == 500 and "division by zero" in failed.message
    assert closed.status == 503


def test_batcher_workers_run_calls_at_once():
    """With two workers two model calls are in flight together (each waits for the other
    at a barrier, which one worker could never pass); bad settings fail in one line."""
    barrier = threading.Barrier(2, timeout=20)

    def model(images):
        barrier.wait()
        return {"sum": images.reshape(len(images), -1).sum(axis=1)}

    async def scenario():
        batcher = Batcher(model, max_batch=8, max_wait_ms=0, workers=2)
        batcher.start()
        images = [np.full((4 + i, 6, 3), i + 1, np.uint8) for i in range(2)]
        results = await asyncio.gather(*(batcher.predict(im) for im in images))
        await batcher.close()
        return images, results, batcher.calls

    images, results, calls = asyncio.run(scenario())
    assert calls == 2 and not barrier.broken
    assert [int(r["sum"]) for r in results] == [int(im.sum()) for im in images]
    with pytest.raises(ConfigError, match="--workers must be >= 1, and"):
        serve.create_app("unused", workers=0)


class _Gated:  # pylint: disable=too-few-public-methods  # a backend that waits
    """A backend whose calls wait for `gate` (set it to let them through)."""

    def __init__(self, backend, gate: threading.Event) -> None:
        self.backend, self.gate, self.entered = backend, gate, threading.Event()
        self.batch = 0
        self.platform, self.inputs, self.outputs = backend.platform, backend.inputs, backend.outputs

    def run(self, images):
        """The backend's `run`, once the gate is open."""
        self.batch = len(images)
        self.entered.set()
        assert self.gate.wait(60)
        return self.backend.run(images)


def test_loading_413_and_graceful_shutdown(export_dir, monkeypatch):
    """503 until the warm-up ends, 413 over max_bytes, and requests pending at shutdown
    are still answered."""
    loaded, running_gate = threading.Event(), threading.Event()
    running_gate.set()
    real = serve_model.load_backend
    backends = []

    def slow_load(export, threads=0):
        assert loaded.wait(60)
        backends.append(_Gated(real(export, threads), running_gate))
        return backends[-1]

    monkeypatch.setattr(serve_model, "load_backend", slow_load)
    # One worker: the gate holds the one call in flight while the others queue.
    app = serve.create_app(export_dir, name="gated", max_bytes=4000, max_wait_ms=1,
                           workers=1)
    png = {"content": encode(picture(40, 30)), "headers": {"Content-Type": "image/png"}}
    with running(app) as url:
        assert httpx.get(url + "/v2/health/live").status_code == 200
        for path in ("/v2/health/ready", "/v2/models/gated/ready", "/v2/models/gated"):
            assert httpx.get(url + path).status_code == 503, path
        assert httpx.get(url + "/v1/models/gated").json()["model_version_status"][0][
            "state"] == "LOADING"
        response = httpx.post(url + "/predict", **png)
        assert response.status_code == 503 and "not loaded yet" in response.json()["error"]
        loaded.set()
        wait_ready(url)
        big = encode(picture(200, 200))
        assert len(big) > 4000
        for content in (big, iter([big[:3000], big[3000:]])):  # Content-Length, chunked
            response = httpx.post(url + "/predict", content=content,
                                  headers={"Content-Type": "image/png"})
            assert response.status_code == 413 and "4000" in response.json()["error"]
        assert httpx.post(url + "/predict", **png).status_code == 200
        running_gate.clear()
        backends[0].entered.clear()
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(
            httpx.post(url + "/predict", timeout=60, **png).status_code)) for _ in range(3)]
        for thread in threads:
            thread.start()
        assert backends[0].entered.wait(30)
        deadline = time.monotonic() + 30
        while backends[0].batch + app.state.batcher.queue.qsize() < 3:  # all 3 are in
            assert time.monotonic() < deadline
            time.sleep(0.02)
        app.state.server.should_exit = True
        time.sleep(0.3)
        running_gate.set()
        for thread in threads:
            thread.join(60)
    assert answers == [200, 200, 200]


def test_load_failure_stops_the_cli(export_dir, monkeypatch, capsys):
    """A model that cannot load: not ready, and `main` stops with an ExportError."""
    def broken(export, threads=0):
        raise ExportError(f"cannot open {export.path} (corrupt)")

    monkeypatch.setattr(serve_model, "load_backend", broken)
    with pytest.raises(ExportError, match="corrupt"):
        serve.main(["--model", export_dir, "--port", "0", "--log-level", "critical"])
    assert f"serving '{NAME}' (onnx:" in capsys.readouterr().out
    app = serve.create_app(export_dir)
    with running(app) as url:
        deadline = time.monotonic() + 30
        while app.state.load_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        response = httpx.get(url + "/v2/health/ready")
        assert response.status_code == 503 and "corrupt" in response.json()["error"]
        status = httpx.get(f"{url}/v1/models/{NAME}").json()["model_version_status"][0]
        assert status["state"] == "END" and "corrupt" in status["status"]["error_message"]


def test_saved_model_backend_agrees(server, export_dir):
    """`--backend saved_model` serves the same predictions as ONNX Runtime."""
    image = picture(seed=3)
    body = {"content": encode(image), "headers": {"Content-Type": "image/png"}, "timeout": 60}
    app = serve.create_app(export_dir, backend="saved_model", name="tf")
    with running(app) as url:
        wait_ready(url, 120)
        assert httpx.get(url + "/v2/models/tf").json()["platform"] == "tensorflow_savedmodel"
        result = httpx.post(url + "/predict", **body).json()
    ref = httpx.post(server.url + "/predict", **body).json()
    np.testing.assert_allclose([d["box"] for d in result["fruits"]["detections"]],
                               [d["box"] for d in ref["fruits"]["detections"]], atol=1e-2)
    np.testing.assert_allclose(list(result["tags"]["probabilities"].values()),
                               list(ref["tags"]["probabilities"].values()), atol=1e-4)
    assert result["shape"]["top_k"][0]["class"] == ref["shape"]["top_k"][0]["class"]


def test_onnx_backend_needs_no_tensorflow(export_dir):
    """Serving the ONNX file imports neither TensorFlow nor Keras."""
    code = ("import sys, numpy as np\n"
            "from export import serve, serve_model\n"
            f"app = serve.create_app({export_dir!r})\n"
            "model = serve_model.load_backend(app.state.export)\n"
            "out = model.run(np.zeros((1, 50, 70, 3), np.uint8))\n"
            "assert out['fruits_boxes'].shape == (1, 6, 4)\n"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False, cwd=os.path.dirname(os.path.dirname(
                              os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_page_is_self_contained(server):
    """`/` is an HTML page that fetches nothing from elsewhere."""
    response = httpx.get(server.url + "/")
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "text/html")
    text = response.text
    assert f"model {NAME}" in text and 'type="file"' in text
    assert "http://" not in text and "https://" not in text and "src=\"/" not in text


def _browser():
    """A headless Chromium WebDriver from Debian's packages, or a skip (a failure when
    EFFDET_REQUIRE_BROWSER=1)."""
    binary = next((path for path in CHROMIUM if os.path.exists(path)), None)
    reason = None
    try:
        from selenium import webdriver  # pylint: disable=import-outside-toplevel  # optional
        from selenium.webdriver.chrome.service import Service  # pylint: disable=import-outside-toplevel
    except ImportError:
        reason = "selenium is not installed (pip install -e '.[dev]')"
    if reason is None and (binary is None or not os.path.exists(CHROMEDRIVER)):
        reason = ("chromium and chromedriver are not installed "
                  "(apt-get install -y chromium chromium-driver)")
    if reason:
        if os.environ.get("EFFDET_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + "; EFFDET_REQUIRE_BROWSER=1 forbids skipping")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def test_page_in_browser(server, tmp_path):
    """Picking an image on the page shows the drawn result and the JSON."""
    from selenium.webdriver.common.by import By  # pylint: disable=import-outside-toplevel
    from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=import-outside-toplevel

    path = tmp_path / "photo.png"
    path.write_bytes(encode(picture(480, 360, seed=5)))
    driver = _browser()
    try:
        driver.get(server.url + "/")
        driver.find_element(By.ID, "file").send_keys(str(path))
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.execute_script(
            "const i = document.getElementById('result-image');"
            "return i.complete && i.naturalWidth > 0;"))
        wait.until(lambda d: "fruits" in d.find_element(By.ID, "result-json").text)
        result = json.loads(driver.find_element(By.ID, "result-json").text)
        assert set(result) == {"fruits", "shape", "tags"}
        assert driver.execute_script(
            "return document.getElementById('result-image').naturalWidth;") == 480
        rows = driver.find_elements(By.CSS_SELECTOR, "#summary table tr")
        assert len(rows) >= 1 + len(result["fruits"]["detections"])
        assert "done" in driver.find_element(By.ID, "status").text
        driver.save_screenshot("/tmp/serve_page.png")
    finally:
        driver.quit()
