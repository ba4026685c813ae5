"""Precise BN: exact per-batch averages at the current weights; the refresh before validation."""
import keras
import numpy as np

from train.callbacks import RefreshBatchNorm
from train.precise_bn import recalibrate_batchnorm


def _model():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, kernel_initializer="ones")(inputs)
    outputs = keras.layers.BatchNormalization(momentum=0.99)(hidden)
    return keras.Model(inputs, outputs)


def _batches(count, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(loc=i, scale=1 + i, size=(8, 4)).astype("float32") for i in range(count)]


def test_recalibrate_averages_each_batch_equally():
    """Moving statistics become the plain average of the batches' statistics."""
    model = _model()
    batches = _batches(5)
    assert recalibrate_batchnorm(model, iter(batches), steps=3, progress=False) == 3
    layer = model.layers[-1]
    hidden = [b.sum(axis=1, keepdims=True).repeat(3, axis=1) for b in batches[:3]]
    np.testing.assert_allclose(layer.moving_mean.numpy(),
                               np.mean([h.mean(axis=0) for h in hidden], axis=0), rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(),
                               np.mean([h.var(axis=0) for h in hidden], axis=0), rtol=1e-4)
    assert layer.momentum == 0.99  # restored


def test_recalibrate_keeps_statistics_on_non_finite_batch():
    model = _model()
    layer = model.layers[-1]
    before = layer.moving_mean.numpy().copy()
    bad = np.full((8, 4), np.inf, np.float32)
    assert recalibrate_batchnorm(model, [bad], steps=1, progress=False) == 0
    np.testing.assert_array_equal(layer.moving_mean.numpy(), before)


def test_refresh_before_validation_reads_on_and_fixes_stale_statistics():
    """Each validation refreshes from the next batches of one iterator."""
    model = _model()
    layer = model.layers[-1]
    batches = iter(_batches(4, seed=1))
    callback = RefreshBatchNorm(model, batches, steps=2)
    callback.on_test_begin()
    first = layer.moving_mean.numpy().copy()
    assert not np.allclose(first, 0.0)  # the stale initial statistics (0) are gone
    callback.on_test_begin()  # the next call reads the next two batches
    assert not np.allclose(layer.moving_mean.numpy(), first)
    assert next(batches, None) is None
