"""`python -m effdet_tf.darknet convert|inspect` on a yolov4.weights-sized file and bad input."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from effdet_tf.backbones import build_cspdarknet53
from effdet_tf.cli import run_cli
from effdet_tf.darknet.commands import main

pytestmark = pytest.mark.real_data

REPO = pathlib.Path(__file__).resolve().parents[1]
YOLOV4_BYTES = 257_717_640
BASE = 0x3F800000  # the float at index j (after the header) has bit pattern BASE + j


def write_indexed(path, num_bytes):
    """A Darknet 0.2.5 file of `num_bytes` (64-bit seen) whose float j has bits BASE + j."""
    count = (num_bytes - 20) // 4
    with open(path, "wb") as handle:
        handle.write(np.array([0, 2, 5], "<i4").tobytes() + np.array([32013312], "<u8").tobytes())
        (np.arange(count, dtype=np.uint32) + BASE).astype("<u4").tofile(handle)
    assert os.path.getsize(path) == num_bytes
    return path


def indices_of(values):
    """File positions (float index after the header) of loaded values."""
    return np.asarray(values, np.float32).view(np.uint32).astype(np.int64) - BASE


def run_main(argv, capsys):
    """Runs the CLI in-process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as done:
        run_cli(main, [str(a) for a in argv])
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


@pytest.mark.slow
def test_convert_yolov4_sized_file_to_backbone(shared, tmp_path):
    """--upto 105 on a 257,717,640-byte file: the backbone holds the values at their offsets."""
    cfg = shared("darknet", "alexeyab-cfg", "yolov4.cfg")
    weights = write_indexed(tmp_path / "yolov4.weights", YOLOV4_BYTES)
    out = tmp_path / "cspdarknet53.weights.h5"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, "-m", "effdet_tf.darknet", "convert", "--cfg", str(cfg), "--weights",
         str(weights), "--out", str(out), "--upto", "105"],
        env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hand-written CSPDarknet53" in result.stdout
    assert "read 106,610,068 of 257,717,640, left unread 151,107,572" in result.stdout
    assert sorted(os.listdir(tmp_path)) == ["cspdarknet53.weights.h5", "yolov4.weights"]
    os.remove(weights)

    backbone = build_cspdarknet53()
    backbone.load_weights(out)
    # Offsets from the backbone's own shapes: per conv 4 * filters BN values, then the kernel.
    offsets, offset = {}, 0
    for index in range(105):
        name = f"conv_{index:03d}"
        if name in {layer.name for layer in backbone.layers}:
            offsets[index] = offset
            kernel_shape = backbone.get_layer(name).kernel.shape
            offset += 4 * kernel_shape[-1] + int(np.prod(kernel_shape))
    assert offset == 26_652_512
    for index in (0, 1, 54, 104):  # first conv, a stride-2 conv, C3, C5
        start = offsets[index]
        conv = backbone.get_layer(f"conv_{index:03d}")
        size, _, channels, filters = conv.kernel.shape
        gamma, beta, mean, var = backbone.get_layer(f"bn_{index:03d}").get_weights()
        for values, first in ((beta, 0), (gamma, 1), (mean, 2), (var, 3)):
            np.testing.assert_array_equal(indices_of(values),
                                          start + first * filters + np.arange(filters))
        expected = (start + 4 * filters + np.arange(filters * channels * size * size)).reshape(
            filters, channels, size, size).transpose(2, 3, 1, 0)
        np.testing.assert_array_equal(indices_of(conv.kernel.numpy()), expected)


def test_convert_generic_and_refusals(shared, tmp_path, capsys):
    """Generic conversion; an existing --out is refused; a bad file writes nothing."""
    cfg = shared("darknet", "yolo-fastest", "yolo-fastest-1.1.cfg")
    weights = shared("darknet", "yolo-fastest", "yolo-fastest-1.1.weights")
    out = tmp_path / "fastest.weights.h5"
    code, stdout, _ = run_main(["convert", "--cfg", cfg, "--weights", weights, "--out", out],
                               capsys)
    assert code == 0 and "generic cfg model" in stdout
    assert "left unread 0" in stdout and out.exists()

    code, _, err = run_main(["convert", "--cfg", cfg, "--weights", weights, "--out", out],
                            capsys)
    assert code == 2 and "exists; pass --overwrite" in err

    short = tmp_path / "short.weights"
    short.write_bytes(weights.read_bytes()[:-4])
    out2 = tmp_path / "short.weights.h5"
    code, _, err = run_main(["convert", "--cfg", cfg, "--weights", short, "--out", out2],
                            capsys)
    assert code == 2 and err.startswith("error: ") and "does not match the cfg" in err
    assert f"{os.path.getsize(weights):,}" in err and f"{os.path.getsize(short):,}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "fastest.weights.h5", "short.weights"]

    code, _, err = run_main(["convert", "--cfg", cfg, "--weights", weights, "--out",
                             tmp_path / "x.h5"], capsys)
    assert code == 2 and "must end with .weights.h5" in err


def test_convert_upto_generic_and_forced_backbone(shared, tmp_path, capsys):
    """--upto on a non-CSPDarknet cfg uses the generic model; --model cspdarknet53 refuses it."""
    cfg = shared("darknet", "yolo-fastest", "yolo-fastest-1.1.cfg")
    weights = shared("darknet", "yolo-fastest", "yolo-fastest-1.1.weights")
    out = tmp_path / "part.weights.h5"
    code, stdout, _ = run_main(["convert", "--cfg", cfg, "--weights", weights, "--out", out,
                                "--upto", "20"], capsys)
    assert code == 0 and "layers 0..19" in stdout
    code, _, err = run_main(["convert", "--cfg", cfg, "--weights", weights, "--out",
                             tmp_path / "bb.weights.h5", "--upto", "105", "--model",
                             "cspdarknet53"], capsys)
    assert code == 2 and "are not CSPDarknet53" in err


def test_inspect(shared, capsys):
    """inspect prints the header, one row per layer with file offsets, and the accounting."""
    cfg = shared("darknet", "yolo-fastest", "yolo-fastest-1.1.cfg")
    weights = shared("darknet", "yolo-fastest", "yolo-fastest-1.1.weights")
    code, stdout, _ = run_main(["inspect", "--cfg", cfg, "--weights", weights], capsys)
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0] == "header: version 0.2.5, seen 14,231,680, header 20 bytes"
    row = lines[2].split()
    assert row[:3] == ["0", "convolutional", "8"] and row[-1] == "20"
    assert "file: 1,384,268 bytes, +0 against the cfg" in stdout

    wrong = shared("darknet", "yolo-fastest", "yolo-fastest-xl.weights")
    code, stdout, _ = run_main(["inspect", "--cfg", cfg, "--weights", wrong], capsys)
    assert code == 1 and "against the cfg" in stdout


def test_unknown_section_via_cli(tmp_path, capsys):
    """A cfg error reaches the user as one line naming the section and line."""
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("[net]\nwidth=32\n[convolutional]\nfilters=2\n\n[region]\nclasses=2\n")
    code, _, err = run_main(["inspect", "--cfg", cfg], capsys)
    assert code == 2
    assert "unknown or unsupported section [region] at line 6" in err and str(cfg) in err


@pytest.mark.slow
def test_download_keeps_a_checked_file_only(shared, tmp_path, capsys):
    """`download` from a local file:// URL: the yolov4-sized file passes both checks; a file
    of another model, or of the wrong size, is refused and nothing is left behind."""
    cfg = shared("darknet", "alexeyab-cfg", "yolov4.cfg")
    source = write_indexed(tmp_path / "source.weights", YOLOV4_BYTES)
    out = tmp_path / "got" / "yolov4.weights"
    code, stdout, err = run_main(["download", "--cfg", cfg, "--out", out,
                                  "--url", source.as_uri()], capsys)
    assert code == 0, err
    assert os.path.getsize(out) == YOLOV4_BYTES and "size and byte accounting" in stdout
    assert "python -m effdet_tf.darknet convert" in stdout
    os.remove(source)
    os.remove(out)

    fastest = shared("darknet", "yolo-fastest", "yolo-fastest-1.1.weights")
    xl_cfg = shared("darknet", "yolo-fastest", "yolo-fastest-xl.cfg")
    code, _, err = run_main(["download", "--cfg", xl_cfg, "--out", out, "--size", "0",
                             "--url", fastest.as_uri()], capsys)
    assert code == 2 and "does not match the cfg" in err
    code, _, err = run_main(["download", "--cfg", cfg, "--out", out,
                             "--url", fastest.as_uri()], capsys)
    assert code == 2 and f"expected {YOLOV4_BYTES:,}" in err
    code, _, err = run_main(["download", "--cfg", cfg, "--out", out,
                             "--url", (tmp_path / "none.weights").as_uri()], capsys)
    assert code == 2 and "download failed" in err
    assert sorted(p.name for p in (tmp_path / "got").iterdir()) == []
