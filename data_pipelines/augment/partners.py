"""Choosing mixing partners (Mosaic tiles, CutMix, MixUp) within one dataset."""
import tensorflow as tf

from data_pipelines.augment import rng


def same_dataset_partners(dataset_id: tf.Tensor, seed: tf.Tensor, num: int) -> tf.Tensor:
    """Picks ``num`` partners per example among the batch examples of the same dataset.

    Each example draws distinct partners other than itself, in random order, while there
    are enough; with fewer, the candidates repeat cyclically; with none, the example is
    its own partner. A partner never comes from another dataset.

    Args:
        dataset_id: int32 ``[B]``.
        seed: int32 ``[2]`` stateless seed.
        num: partners per example.

    Returns:
        int32 ``[B, num]``, indices into the batch.
    """
    batch = tf.shape(dataset_id)[0]
    same = tf.equal(dataset_id[:, tf.newaxis], dataset_id[tf.newaxis, :])
    is_self = tf.eye(batch, dtype=tf.bool)
    others = same & ~is_self
    has_other = tf.reduce_any(others, axis=1, keepdims=True)
    candidate = tf.where(has_other, others, is_self)
    noise = rng.uniform(tf.shape(same, out_type=tf.int32), seed)
    score = tf.where(candidate, noise, -1.0)
    k = dataset_id.shape[0]
    if k is None:
        k = batch
    _, order = tf.math.top_k(score, k=k, sorted=True)
    count = tf.reduce_sum(tf.cast(candidate, tf.int32), axis=1, keepdims=True)
    slot = tf.math.floormod(tf.range(num, dtype=tf.int32)[tf.newaxis, :], count)
    return tf.gather(order, slot, batch_dims=1)
