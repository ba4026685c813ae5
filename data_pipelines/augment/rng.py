"""Stateless random draws with one fixed algorithm, so graph and XLA runs agree.

Two things make TensorFlow's stateless draws differ between a plain graph and XLA:
``alg="auto_select"`` may pick another generator, and even with Philox fixed, XLA turns the
random bits into floats differently (measured: same int32 draws, different float32 ones).
So the generator is fixed to Philox and floats are made here from 24 random integer bits;
the same seed then gives the same numbers in tf.data and in a ``jit_compile=True`` step.
"""
import tensorflow as tf

ALGORITHM = "philox"
_FLOAT_BITS = 24


def split_seed(seed: tf.Tensor, num: int) -> tf.Tensor:
    """Derives ``num`` independent seeds from ``seed``.

    Args:
        seed: int32 ``[2]``.
        num: number of seeds.

    Returns:
        int32 ``[num, 2]``.
    """
    return tf.random.experimental.stateless_split(seed, num, alg=ALGORITHM)


def uniform(shape: tf.Tensor | list, seed: tf.Tensor, minval: float | int = 0.0,
            maxval: float | int = 1.0, dtype: tf.DType = tf.float32) -> tf.Tensor:
    """Uniform draws in ``[minval, maxval)``.

    Args:
        shape: output shape.
        seed: int32 ``[2]``.
        minval: lower bound.
        maxval: upper bound (exclusive).
        dtype: float32 or int32.

    Returns:
        A tensor of ``shape``.
    """
    if dtype.is_integer:
        return tf.random.stateless_uniform(shape, seed, minval, maxval, dtype=dtype,
                                           alg=ALGORITHM)
    bits = tf.random.stateless_uniform(shape, seed, 0, 2 ** _FLOAT_BITS, dtype=tf.int32,
                                       alg=ALGORITHM)
    unit = tf.cast(bits, dtype) * (2.0 ** -_FLOAT_BITS)
    return minval + (maxval - minval) * unit
