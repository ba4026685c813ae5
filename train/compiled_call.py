"""A model's forward pass compiled once per model, for the loops that run outside `fit`.

Calling a Keras model directly runs it op by op under JAX: on a GPU the per-epoch BN
refresh and the evaluation loops then spend most of their time dispatching single ops
(docs/results.md, "Training throughput on a GPU"). These functions trace the forward
pass once per model (and input shape) instead:

- `statistics_pass(model)`: training-mode forward that writes the updated
  non-trainable state (BN moving statistics) back; outputs dropped. `jax.jit` of the
  model's `stateless_call` under JAX, a `tf.function` under TensorFlow.
- `inference(model)`: `model(images, training=False)`, jitted under JAX (a batch
  smaller than the largest seen is padded to it, so a split's last batch does not
  compile the pass again); a `tf.function` under TensorFlow (`reduce_retracing`: a
  second batch shape traces once more, with the batch size left open, and no later
  shape traces again). On a 2-core CPU the traced pass is 4.4x the eager call's speed
  at 128 px (median of four runs, 3.15-4.55x) and 1.75-1.78x at 512 px
  (docs/results.md, "Evaluation and prediction speed under TensorFlow").

The BN momentum (and any other Python attribute a layer reads) is read when a pass is
traced: set it before the first call.
"""
import weakref
from typing import Any, Callable, Dict

import keras

# model -> {"stats" | "inference": its traced function}. The functions hold the model, so
# an entry lives as long as the process (models are few; tests make more, all small).
_PASSES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _cached(model: keras.Model, kind: str, make: Callable[[], Callable]) -> Callable:
    passes: Dict[str, Callable] = _PASSES.setdefault(model, {})
    if kind not in passes:
        passes[kind] = make()
    return passes[kind]


def _jax_pass(model: keras.Model, training: bool) -> Callable[[Any], Any]:
    import jax  # pylint: disable=import-outside-toplevel  # JAX backend only

    def pure(trainable, non_trainable, images):
        outputs, state = model.stateless_call(trainable, non_trainable, images,
                                              training=training)
        return (None if training else outputs), state

    compiled = jax.jit(pure)
    largest = [0]  # inference pads smaller batches to the largest seen: one compile

    def forward(images):
        images = keras.ops.convert_to_tensor(images)
        size = int(images.shape[0])
        pad = 0 if training else max(largest[0] - size, 0)
        largest[0] = max(largest[0], size)
        if pad:
            images = keras.ops.concatenate(
                [images, keras.ops.zeros((pad,) + tuple(images.shape[1:]), images.dtype)])
        outputs, state = compiled([v.value for v in model.trainable_variables],
                                  [v.value for v in model.non_trainable_variables], images)
        if training:
            for variable, value in zip(model.non_trainable_variables, state):
                variable.assign(value)
            return None
        return keras.tree.map_structure(lambda value: value[:size], outputs) if pad \
            else outputs

    return forward


def statistics_pass(model: keras.Model) -> Callable[[Any], None]:
    """`images -> None`: one training-mode forward pass updating the model's BN statistics.

    Args:
        model: any Keras model.

    Returns:
        The pass, traced on its first call (per input shape) and cached for the model.
    """
    def make():
        backend = keras.backend.backend()
        if backend == "jax":
            return _jax_pass(model, training=True)

        def forward(images):
            model(images, training=True)

        if backend == "tensorflow":
            import tensorflow as tf  # pylint: disable=import-outside-toplevel  # TF backend only
            return tf.function(forward, reduce_retracing=True)
        return forward

    return _cached(model, "stats", make)


def inference(model: keras.Model) -> Callable[[Any], Any]:
    """`images -> outputs` of `model(images, training=False)`, traced once per model.

    Jitted under JAX, a `tf.function` under TensorFlow, the eager call otherwise.

    Args:
        model: any Keras model.

    Returns:
        The forward function (cached for the model).
    """
    def make():
        backend = keras.backend.backend()
        if backend == "jax":
            return _jax_pass(model, training=False)

        def forward(images):
            return model(images, training=False)

        if backend == "tensorflow":
            import tensorflow as tf  # pylint: disable=import-outside-toplevel  # TF backend only
            return tf.function(forward, reduce_retracing=True)
        return forward

    return _cached(model, "inference", make)
