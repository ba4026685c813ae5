"""The forward passes run outside `fit` are traced once per model, under JAX too."""
import numpy as np

from train.compiled_call import inference, statistics_pass
from tests.jax_subprocess import run_under_jax
from tests.test_precise_bn import _model

JAX_SCRIPT = """
import json
import keras
import numpy as np
from train.compiled_call import inference
from train.precise_bn import recalibrate_batchnorm
assert keras.backend.backend() == "jax"

class Count(keras.layers.Layer):
    calls = 0
    def call(self, x):
        Count.calls += 1  # Python runs this once per trace (jit), or per call (op by op)
        return x

inputs = keras.Input((4,))
hidden = keras.layers.Dense(3, kernel_initializer="ones")(Count()(inputs))
model = keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.99)(hidden))
Count.calls = 0  # building the model called it once
rng = np.random.default_rng(0)
batches = [rng.normal(i, 1 + i, size=(8, 4)).astype("float32") for i in range(3)]
used = recalibrate_batchnorm(model, iter(batches), steps=3, progress=False)
stats_traces = Count.calls
bn = model.layers[-1]
hidden = [b.sum(axis=1, keepdims=True).repeat(3, axis=1) for b in batches]
mean_ok = np.allclose(bn.moving_mean.numpy(), np.mean([h.mean(0) for h in hidden], 0), rtol=1e-5)
var_ok = np.allclose(bn.moving_variance.numpy(), np.mean([h.var(0) for h in hidden], 0),
                     rtol=1e-4)
forward = inference(model)
full, part = forward(batches[0]), forward(batches[1][:5])
eager = np.asarray(model(batches[1][:5], training=False))
print("RESULT" + json.dumps({
    "used": used, "stats_traces": stats_traces, "mean_ok": bool(mean_ok),
    "var_ok": bool(var_ok), "momentum": bn.momentum,
    "inference_traces": Count.calls - stats_traces - 1,  # minus the eager call
    "shapes": [list(full.shape), list(part.shape)],
    "same_as_eager": bool(np.allclose(np.asarray(part), eager, atol=1e-5))}))
"""


def test_jax_passes_are_traced_once_and_match_the_eager_model():
    """Under JAX the BN statistics pass and inference are jitted: Python runs each layer
    once (op by op, it ran once per batch: 10 s of every epoch at 512 px on an H200),
    the statistics are the exact batch averages, and a smaller last batch is padded
    (no second compile) with the same outputs as the eager model."""
    result = run_under_jax(JAX_SCRIPT)
    assert result == {"used": 3, "stats_traces": 1, "mean_ok": True, "var_ok": True,
                      "momentum": 0.99, "inference_traces": 1,
                      "shapes": [[8, 3], [5, 3]], "same_as_eager": True}


def test_passes_are_cached_per_model_under_tensorflow():
    """One traced pass per model and kind; under TensorFlow inference is a tf.function
    that traces at most twice (a second batch size relaxes the shape), whatever the
    number of batches, with the eager call's outputs."""
    import keras  # pylint: disable=import-outside-toplevel  # after the backend is set

    calls = []  # Python runs the Lambda once per trace, or once per eager call

    def count(inputs):
        calls.append(1)
        return inputs

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Lambda(count)(inputs)))
    other = _model()
    assert statistics_pass(model) is statistics_pass(model)
    assert statistics_pass(model) is not statistics_pass(other)
    assert inference(model) is inference(model)
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(size, 4)).astype("float32") for size in (8, 8, 5, 8, 3, 8)]
    del calls[:]  # building the model ran it once
    outputs = [np.asarray(inference(model)(batch)) for batch in batches]
    assert len(calls) == 2
    for batch, out in zip(batches, outputs):
        np.testing.assert_allclose(out, np.asarray(model(batch, training=False)), atol=1e-6)
