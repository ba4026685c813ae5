"""Tests of `export.loadtest` against the real `export.serve` app on a loopback port.

The tiny three-head run of tests/test_serve.py is exported to ONNX once per module and
served in this process (uvicorn in a thread, as tests/test_serve.py does), so `--pid` is
this process.
"""
import json
import os
import types

import numpy as np
import pytest

import effdet_tf.backbones.cspdarknet53 as csp
from effdet_tf.cli import run_cli
from effdet_tf.errors import ConfigError
from export import loadtest, serve
from export.graph import load_graph
from export.onnx import write_onnx
from tests.backbones import tiny_backbone
from tests.test_serve import encode, make_run, picture, running, wait_ready


@pytest.fixture(name="service", scope="module")
def fixture_service(tmp_path_factory):
    """`(url, export, images)`: the served ONNX export and a folder of JPEG and PNG files."""
    root = tmp_path_factory.mktemp("loadtest")
    export = str(root / "export")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csp, "build_cspdarknet53", tiny_backbone)
        graph, _ = load_graph(make_run(str(root / "run")), weights="last", with_raw=True)
        write_onnx(graph, os.path.join(export, "model.onnx"))
    images = root / "images"
    images.mkdir()
    for k, (width, height, fmt) in enumerate([(160, 120, "JPEG"), (96, 128, "PNG"),
                                              (200, 90, "JPEG")]):
        suffix = "jpg" if fmt == "JPEG" else "png"
        (images / f"im{k}.{suffix}").write_bytes(encode(picture(width, height, seed=k), fmt))
    (images / "notes.txt").write_text("not an image", encoding="utf-8")
    app = serve.create_app(export, max_wait_ms=2)
    with running(app) as url:
        wait_ready(url)
        yield types.SimpleNamespace(url=url, export=export, images=str(images))


def test_load_test_with_direct_comparison(service, tmp_path, capsys):
    """C = 4, N = 20: all complete without error, ordered percentiles, the overhead ratio."""
    report = loadtest.load_test(service.url, service.images, concurrency=4, requests=20,
                                timeout_s=120, pid=os.getpid(), direct=service.export)
    figures = report["service"]
    assert (figures["completed"], figures["errors"], figures["not_sent"]) == (20, 0, 0)
    assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"]
    assert figures["throughput_rps"] > 0 and report["images"] == 3
    direct = report["direct"]
    assert (direct["completed"], direct["errors"]) == (20, 0)
    assert direct["p50_ms"] <= direct["p95_ms"] <= direct["p99_ms"]
    assert report["overhead_p50"] == pytest.approx(figures["p50_ms"] / direct["p50_ms"])
    assert report["rss_kib"]["after"]["VmRSS"] > 0 and report["rounds"] == 5
    out = str(tmp_path / "load.json")
    code = loadtest.main(["--url", service.url, "--images", service.images, "--concurrency",
                          "4", "--requests", "20", "--direct", service.export, "--json", out])
    printed = capsys.readouterr().out
    assert code == 0
    assert "service overhead at p50:" in printed and "x direct ONNX Runtime" in printed
    service_row = next(line for line in printed.splitlines() if line.startswith("service "))
    assert service_row.split()[1:4] == ["20", "0", "0"]
    with open(out, encoding="utf-8") as stream:
        saved = json.load(stream)
    assert saved["service"]["completed"] == 20 and saved["overhead_p50"] > 0


def test_errors_and_time_bound_are_counted(service):
    """Non-200 answers are errors; no request starts once the time limit has passed."""
    report = loadtest.load_test(service.url + "/nowhere", service.images, concurrency=2,
                                requests=6, timeout_s=60)
    assert report["service"]["errors"] == 6 and report["service"]["completed"] == 0
    assert "HTTP 404" in report["service"]["first_error"]
    assert report["service"]["p50_ms"] is None
    assert "        -" in loadtest.format_report(report)
    late = loadtest.run_workers(10, 3, 1e-9, lambda: lambda index: None)
    assert late.not_sent + len(late.latencies_ms) == 10 and late.not_sent >= 7
    joined = loadtest.Result([1.0], 1, 0, 2.0, "a").merged(loadtest.Result([2.0], 0, 3, 1.0))
    assert (joined.latencies_ms, joined.errors, joined.not_sent, joined.wall_s,
            joined.first_error) == ([1.0, 2.0], 1, 3, 3.0, "a")
    alone = loadtest.load_test(service.url, service.images, concurrency=1, requests=7,
                               timeout_s=60, rounds=3)  # no --direct: one round
    assert alone["rounds"] == 1 and alone["service"]["completed"] == 7
    with pytest.raises(ConfigError, match="--rounds must be >= 1"):
        loadtest.load_test(service.url, service.images, requests=3, rounds=0)
    percentiles = loadtest.Result([5.0, 1.0, 3.0, 100.0], 0, 0, 1.0).summary()
    assert percentiles["p50_ms"] == pytest.approx(float(np.percentile([1, 3, 5, 100], 50)))


@pytest.mark.parametrize("url", ["http://192.168.1.10:8080", "http://example.com",
                                 "https://127.0.0.1:8443", "127.0.0.1:8080"])
def test_non_loopback_urls_are_refused(url, service, capsys):
    """Anything but http on a loopback address: a one-line error, exit 2, nothing sent."""
    with pytest.raises(ConfigError):
        loadtest.check_url(url)
    with pytest.raises(SystemExit) as stop:
        run_cli(loadtest.main, ["--url", url, "--images", service.images])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --url") and "\n" not in err
    for good in ("http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:80",
                 "http://127.1.2.3"):
        assert loadtest.check_url(good)[0] in ("127.0.0.1", "localhost", "::1", "127.1.2.3")
