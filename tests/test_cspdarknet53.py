"""Hand-written CSPDarknet53: size, names, shapes, jax backend, equality with yolov4.cfg."""
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from effdet_tf.backbones import build_cspdarknet53
from effdet_tf.darknet import (build_darknet_model, load_backbone_weights, load_darknet_weights,
                               parse_cfg, plan_layers)

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(name="backbone", scope="module")
def fixture_backbone():
    """One backbone with dynamic input size for the module."""
    return build_cspdarknet53()


def test_param_count_and_names(backbone):
    """26,652,512 values; 72 conv/BN pairs named by yolov4.cfg index; Darknet BN epsilon."""
    assert backbone.count_params() == 26_652_512
    convs = [layer for layer in backbone.layers if layer.name.startswith("conv_")]
    assert len(convs) == 72
    assert all(re.fullmatch(r"conv_\d{3}", layer.name) for layer in convs)
    assert not any(layer.use_bias for layer in convs)
    bns = [layer for layer in backbone.layers if layer.name.startswith("bn_")]
    assert len(bns) == 72 and all(layer.epsilon == 1e-5 for layer in bns)
    assert {f"conv_{i:03d}" for i in (0, 54, 85, 104)} <= {layer.name for layer in convs}
    assert backbone.get_layer("conv_001").strides == (2, 2)
    assert backbone.get_layer("conv_001").padding == "valid"
    assert backbone.get_layer("pad_001").padding == ((1, 0), (1, 0))


@pytest.mark.parametrize("size", [256, 320])
def test_output_shapes(backbone, size):
    """C3/C4/C5 at strides 8/16/32 with 256/512/1024 channels."""
    outputs = backbone(np.zeros((1, size, size, 3), np.float32))
    assert [tuple(o.shape) for o in outputs] == [
        (1, size // 8, size // 8, 256), (1, size // 16, size // 16, 512),
        (1, size // 32, size // 32, 1024)]


def test_fixed_input_shape():
    """A fixed input size gives static output shapes."""
    model = build_cspdarknet53(input_shape=(64, 96, 3), name="bb")
    assert model.name == "bb"
    assert [tuple(o.shape) for o in model.outputs] == [
        (None, 8, 12, 256), (None, 4, 6, 512), (None, 2, 3, 1024)]


def test_backend_neutral_sources():
    """No TensorFlow in the backbone or the darknet package (keras / keras.ops only)."""
    for folder in ("effdet_tf/backbones", "effdet_tf/darknet"):
        for path in (REPO / folder).glob("*.py"):
            text = path.read_text()
            assert not re.search(r"\btf\.|import tensorflow", text), path


@pytest.mark.slow
def test_jax_backend(tmp_path):
    """Builds and runs under KERAS_BACKEND=jax (a subprocess: the backend is fixed at import)."""
    script = tmp_path / "run_jax.py"
    script.write_text(
        "import keras, numpy as np\n"
        "from effdet_tf.backbones import build_cspdarknet53\n"
        "assert keras.backend.backend() == 'jax'\n"
        "m = build_cspdarknet53()\n"
        "x = np.random.default_rng(0).uniform(0, 1, (1, 64, 96, 3)).astype('float32')\n"
        "out = m.predict_on_batch(x)\n"
        "print(m.count_params(), [tuple(o.shape) for o in out],"
        " all(bool(np.isfinite(np.asarray(o)).all()) for o in out))\n")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == (
        "26652512 [(1, 8, 12, 256), (1, 4, 6, 512), (1, 2, 3, 1024)] True")


def write_random_darknet(path, cfg_path, upto, seed=0):
    """A Darknet file for layers < upto with small, layer-scaled random values."""
    rng = np.random.default_rng(seed)
    parts = []
    for plan in plan_layers(parse_cfg(cfg_path), upto=upto):
        spec = plan.conv
        if spec is None:
            continue
        f = spec.filters
        parts += [rng.normal(0, 0.05, f), rng.uniform(0.8, 1.2, f), rng.normal(0, 0.05, f),
                  rng.uniform(0.8, 1.2, f)]
        fan_in = spec.in_channels // spec.groups * spec.size ** 2
        parts.append(rng.normal(0, 1.0 / np.sqrt(fan_in), spec.kernel_floats))
    with open(path, "wb") as handle:
        handle.write(np.array([0, 2, 5], "<i4").tobytes() + np.array([0], "<u8").tobytes())
        np.concatenate(parts).astype("<f4").tofile(handle)
    return path


@pytest.mark.real_data
def test_equals_generic_yolov4_model_on_real_image(shared, backbone, tmp_path):
    """Same Darknet weights: hand-written and cfg-built layers 0-104 give the same C3-C5."""
    cfg = shared("darknet", "alexeyab-cfg", "yolov4.cfg")
    image_path = shared("datasets", "fruits", "images", "apple_1.jpg")
    image = np.asarray(Image.open(image_path).convert("RGB").resize((256, 256)),
                       np.float32)[None] / 255.0
    weights = write_random_darknet(tmp_path / "backbone.weights", cfg, upto=105)

    generic = build_darknet_model(cfg, upto=105, outputs=[54, 85, 104])
    report_generic = load_darknet_weights(generic, cfg, weights, upto=105)
    report = load_backbone_weights(backbone, weights, cfg_path=cfg)
    assert report.bytes_left == report_generic.bytes_left == 0
    assert report.convolutions == 72

    ours = [np.asarray(o) for o in backbone(image)]
    theirs = [np.asarray(o) for o in generic(image)]
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        assert np.all(np.isfinite(a)) and 1e-3 < np.abs(a).mean() < 1e3
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)

    saved = tmp_path / "backbone.weights.h5"
    backbone.save_weights(saved)
    fresh = build_cspdarknet53()
    assert load_backbone_weights(fresh, saved) is None
    np.testing.assert_array_equal(np.asarray(fresh(image)[2]), ours[2])

    # Without a cfg the layout comes from the model's own conv/bn layers: same values.
    no_cfg = build_cspdarknet53()
    report = load_backbone_weights(no_cfg, weights)
    assert (report.bytes_read, report.bytes_left, report.convolutions) == (
        20 + 4 * 26_652_512, 0, 72)
    for a, b in zip(no_cfg.weights, backbone.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
