"""Darknet .weights: header, exact byte accounting, real Yolo-Fastest files, mismatches."""
import os

import numpy as np
import pytest

from effdet_tf.darknet import (build_darknet_model, load_backbone_weights, load_darknet_weights,
                               parse_cfg_text, read_header)
from effdet_tf.errors import DarknetError

pytestmark = pytest.mark.real_data

FASTEST = ["yolo-fastest", "yolo-fastest-xl", "yolo-fastest-1.1", "yolo-fastest-1.1-xl",
           "yolo-fastest-1.1_body"]
BASE = 0x3F800000  # bit pattern of 1.0f: value number j is stored as the float with bits BASE+j


def write_indexed(path, num_bytes, *, major=0, minor=2, revision=5):
    """A Darknet file of exactly `num_bytes` whose float j has bit pattern BASE + j."""
    wide = major * 10 + minor >= 2
    header = np.array([major, minor, revision], "<i4").tobytes() + np.array(
        [1234], "<u8" if wide else "<u4").tobytes()
    count = (num_bytes - len(header)) // 4
    with open(path, "wb") as handle:
        handle.write(header)
        (np.arange(count, dtype=np.uint32) + BASE).astype("<u4").tofile(handle)
    assert os.path.getsize(path) == num_bytes
    return path


def indices_of(values):
    """Recovers the file positions (float index after the header) of loaded values."""
    return np.asarray(values, np.float32).view(np.uint32).astype(np.int64) - BASE


@pytest.mark.parametrize("name", FASTEST)
def test_real_yolo_fastest_loads_exactly(shared, name):
    """Each real Yolo-Fastest file fills the generic model with zero bytes left over."""
    cfg = shared("darknet", "yolo-fastest", f"{name}.cfg")
    weights = shared("darknet", "yolo-fastest", f"{name}.weights")
    model = build_darknet_model(cfg)
    report = load_darknet_weights(model, cfg, weights)
    assert report.bytes_left == 0
    assert report.bytes_read == report.file_size == os.path.getsize(weights)
    assert (report.header.major, report.header.minor, report.header.revision) == (0, 2, 5)
    assert report.header.size == 20 and not report.unloaded
    assert model.count_params() * 4 + 20 == report.file_size
    # first layer: 8 (or 16) filters, BN; the file starts with its biases
    raw = np.fromfile(weights, "<f4", count=8, offset=20)
    np.testing.assert_array_equal(model.get_layer("bn_000").beta.numpy()[:8], raw)


@pytest.mark.parametrize("delta", [-4, 4])
def test_short_or_long_file_names_both_sizes(shared, tmp_path, delta):
    """A copy 4 bytes short or long fails, naming the file and both byte counts."""
    cfg = shared("darknet", "yolo-fastest", "yolo-fastest-1.1.cfg")
    source = shared("darknet", "yolo-fastest", "yolo-fastest-1.1.weights")
    size = os.path.getsize(source)
    copy = tmp_path / "copy.weights"
    with open(source, "rb") as src, open(copy, "wb") as dst:
        data = src.read()
        dst.write(data[:size + delta] if delta < 0 else data + b"\0" * delta)
    model = build_darknet_model(cfg)
    before = model.get_layer("conv_000").kernel.numpy().copy()
    what = "shorter" if delta < 0 else "longer"
    with pytest.raises(DarknetError) as err:
        load_darknet_weights(model, cfg, copy)
    message = str(err.value)
    assert str(copy) in message and what in message and f"does not match the cfg {cfg}" in message
    assert f"{size:,}" in message and f"{size + delta:,}" in message
    np.testing.assert_array_equal(model.get_layer("conv_000").kernel.numpy(), before)


def test_cfg_of_another_model_is_named_as_a_mismatch(shared):
    """yolo-fastest-xl.cfg with yolo-fastest-1.1.weights: both files and byte counts named."""
    cfg = shared("darknet", "yolo-fastest", "yolo-fastest-xl.cfg")
    weights = shared("darknet", "yolo-fastest", "yolo-fastest-1.1.weights")
    model = build_darknet_model(cfg)
    with pytest.raises(DarknetError) as err:
        load_darknet_weights(model, cfg, weights)
    message = str(err.value)
    assert f"the weights file {weights} does not match the cfg {cfg}" in message
    assert f"the file has {os.path.getsize(weights):,} bytes" in message
    assert "use the cfg the weights were trained with" in message


def test_upto_reports_bytes_left(shared):
    """With upto=N only layers < N are read; the rest is reported, not an error."""
    cfg = shared("darknet", "yolo-fastest", "yolo-fastest-1.1.cfg")
    weights = shared("darknet", "yolo-fastest", "yolo-fastest-1.1.weights")
    model = build_darknet_model(cfg, upto=10)
    report = load_darknet_weights(model, cfg, weights, upto=10)
    assert report.layers == 10 and report.convolutions == 8
    assert report.bytes_left == report.file_size - report.bytes_read > 0
    assert report.bytes_read == 20 + 4 * model.count_params()


@pytest.mark.parametrize("content,message", [
    (b"\0" * 8, "truncated header: the file has 8 bytes"),
    (np.array([0, 2, 5], "<i4").tobytes() + b"\0" * 4, "version 0.2.5 needs 20"),
])
def test_truncated_header(tmp_path, content, message):
    """Headers shorter than 12 bytes, or than the 64-bit `seen` needs, fail."""
    path = tmp_path / "bad.weights"
    path.write_bytes(content)
    with pytest.raises(DarknetError, match=message):
        read_header(path)


def test_old_header_has_32bit_seen(tmp_path):
    """major*10+minor < 2: `seen` is a uint32 and the header 16 bytes."""
    path = write_indexed(tmp_path / "old.weights", 16 + 8, major=0, minor=1, revision=0)
    header = read_header(path)
    assert (header.size, header.seen) == (16, 1234)


def test_yolov4_tiny_sized_file_generic_builder(shared, tmp_path):
    """A 24,251,276-byte file (yolov4-tiny.weights' size) fills yolov4-tiny exactly.

    Layer 4 reads `[route] groups=2 group_id=1` (32 of layer 2's 64 channels); the last
    convolution has biases and no batch norm.
    """
    cfg = shared("darknet", "alexeyab-cfg", "yolov4-tiny.cfg")
    path = write_indexed(tmp_path / "yolov4-tiny.weights", 24_251_276)
    model = build_darknet_model(cfg)
    report = load_darknet_weights(model, cfg, path)
    assert report.bytes_left == 0 and report.convolutions == 21
    assert model.get_layer("conv_004").kernel.shape == (3, 3, 32, 32)
    # layer 0: biases 0..31, scales 32..63, mean 64..95, var 96..127, kernel 128..
    gamma, beta, mean, var = model.get_layer("bn_000").get_weights()
    np.testing.assert_array_equal(indices_of(beta), np.arange(32))
    np.testing.assert_array_equal(indices_of(gamma), np.arange(32, 64))
    np.testing.assert_array_equal(indices_of(mean), np.arange(64, 96))
    np.testing.assert_array_equal(indices_of(var), np.arange(96, 128))
    kernel = indices_of(model.get_layer("conv_000").kernel.numpy())
    np.testing.assert_array_equal(kernel, (128 + np.arange(32 * 3 * 9)).reshape(
        32, 3, 3, 3).transpose(2, 3, 1, 0))
    # the last convolution ends the file: 255 biases then a [255, 256, 1, 1] kernel
    total = (24_251_276 - 20) // 4
    last = model.get_layer("conv_036")
    np.testing.assert_array_equal(indices_of(last.kernel.numpy()),
                                  (total - 255 * 256 + np.arange(255 * 256)).reshape(
                                      255, 256, 1, 1).transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(indices_of(last.bias.numpy()),
                                  total - 255 * 256 - 255 + np.arange(255))


def test_cfg_model_mismatch(shared, tmp_path):
    """A model built from a different cfg (other filters) is a clear error."""
    cfg = shared("darknet", "yolo-fastest", "yolo-fastest-1.1.cfg")
    weights = shared("darknet", "yolo-fastest", "yolo-fastest-1.1.weights")
    changed = tmp_path / "changed.cfg"
    changed.write_text(cfg.read_text().replace("filters=8\n", "filters=16\n", 1))
    model = build_darknet_model(changed)
    with pytest.raises(DarknetError, match=r"layer 0 \(\[convolutional\] at line \d+\): cfg "
                                           r"implies a regular kernel \(3, 3, 3, 8\)"):
        load_darknet_weights(model, cfg, weights)


def test_model_missing_layer(shared):
    """A model lacking a conv layer the cfg needs names the layer."""
    cfg = shared("darknet", "yolo-fastest", "yolo-fastest-1.1.cfg")
    weights = shared("darknet", "yolo-fastest", "yolo-fastest-1.1.weights")
    model = build_darknet_model(cfg, upto=5)
    with pytest.raises(DarknetError, match="the model has no convolution named conv_005"):
        load_darknet_weights(model, cfg, weights)


def test_load_backbone_weights_bad_files(tmp_path):
    """Missing files, or one too short for the model, are DarknetErrors."""
    model = build_darknet_model_stub()
    with pytest.raises(DarknetError, match="cannot read weights .*x.weights"):
        load_backbone_weights(model, tmp_path / "x.weights")
    short = write_indexed(tmp_path / "short.weights", 20 + 4 * 7)
    with pytest.raises(DarknetError, match=r"does not match the model: .* need 52 bytes "
                                              r".* has 48 bytes"):
        load_backbone_weights(model, short)
    report = load_backbone_weights(model, write_indexed(tmp_path / "ok.weights", 20 + 4 * 9))
    assert (report.bytes_read, report.bytes_left) == (52, 4)
    np.testing.assert_array_equal(indices_of(model.get_layer("conv_000").bias.numpy()), [0, 1])
    with pytest.raises(DarknetError, match="do not exist"):
        load_backbone_weights(model, tmp_path / "x.weights.h5")


def build_darknet_model_stub():
    """A one-convolution generic model."""
    return build_darknet_model(parse_cfg_text(
        "[net]\nchannels=3\n[convolutional]\nfilters=2\nsize=1\n", "stub.cfg"))
