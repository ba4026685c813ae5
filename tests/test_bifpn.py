"""Tests of effdet_tf.bifpn and effdet_tf.layers."""
import keras
import numpy as np
import pytest

from effdet_tf.bifpn import BIFPN_NODES, build_bifpn
from effdet_tf.layers import FastNormalizedFusion


def _bifpn_model(size=128, cells=3, channels=64):
    inputs = [keras.Input((size // s, size // s, c)) for s, c in ((8, 16), (16, 24), (32, 32))]
    return keras.Model(inputs, build_bifpn(inputs, channels=channels, cells=cells))


def test_shapes_and_channels():
    model = _bifpn_model()
    assert [tuple(o.shape) for o in model.outputs] == [
        (None, 16, 16, 64), (None, 8, 8, 64), (None, 4, 4, 64), (None, 2, 2, 64), (None, 1, 1, 64)]


def test_layer_structure_d0():
    """D0 BiFPN: 8 fusion nodes per cell, weights start at 1, BN 0.99 / 1e-3, automl resampling."""
    model = _bifpn_model()
    fusions = [l for l in model.layers if isinstance(l, FastNormalizedFusion)]
    assert len(fusions) == 3 * len(BIFPN_NODES) == 24
    assert sorted({len(l.get_weights()[0]) for l in fusions}) == [2, 3]
    for layer in fusions:
        np.testing.assert_array_equal(layer.get_weights()[0], 1.0)
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert all(l.momentum == 0.99 and l.epsilon == 1e-3 for l in bns)
    # Resampling convs: P6 once; in cell 0, P3 once and P4, P5 twice each.
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)
             and not isinstance(l, keras.layers.SeparableConv2D)]
    assert len(convs) == 1 + 5
    seps = [l for l in model.layers if isinstance(l, keras.layers.SeparableConv2D)]
    assert len(seps) == 24 and all(l.kernel_size == (3, 3) for l in seps)
    assert all(l.name.startswith("bifpn_") for l in model.layers
               if not isinstance(l, keras.layers.InputLayer))


def test_fusion_math():
    layer = FastNormalizedFusion()
    a = np.full((1, 2, 2, 1), 2.0, np.float32)
    b = np.full((1, 2, 2, 1), 4.0, np.float32)
    out = keras.ops.convert_to_numpy(layer([a, b]))
    np.testing.assert_allclose(out, (2.0 + 4.0) / (2.0 + 1e-4), rtol=1e-6)
    layer.set_weights([np.array([-1.0, 3.0], np.float32)])   # relu drops the negative weight
    out = keras.ops.convert_to_numpy(layer([a, b]))
    np.testing.assert_allclose(out, 3.0 * 4.0 / (3.0 + 1e-4), rtol=1e-6)


def test_fusion_rejects_mismatch():
    with pytest.raises(ValueError, match="one shape"):
        FastNormalizedFusion()([keras.Input((4, 4, 8)), keras.Input((2, 2, 8))])
