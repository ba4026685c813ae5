"""Mixing several per-dataset `tf.data` pipelines into one stream of batches."""
from typing import Dict, List, Optional, Sequence

import tensorflow as tf


def normalise_weights(weights: Optional[Sequence[float]], count: int) -> List[float]:
    """Sampling probabilities: equal when `weights` is None, else `weights` normalised.

    Args:
        weights: one non-negative weight per dataset, or None.
        count: number of datasets.

    Returns:
        `count` probabilities summing to 1.

    Raises:
        ValueError: wrong number of weights, a negative weight or all zero.
    """
    if weights is None:
        return [1.0 / count] * count
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise ValueError(f"{len(weights)} sampling weights for {count} datasets")
    if min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"sampling weights {weights} must be >= 0 with a positive sum")
    total = sum(weights)
    return [w / total for w in weights]


def _tag(dataset: tf.data.Dataset, dataset_id: int) -> tf.data.Dataset:
    """Adds `dataset_id` to examples that lack it."""
    if "dataset_id" in dataset.element_spec:
        return dataset

    def add(ex: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        return dict(ex, dataset_id=tf.constant(dataset_id, tf.int32))

    return dataset.map(add)


def mix_datasets(datasets: Sequence[tf.data.Dataset], *, weights: Optional[Sequence[float]] = None,
                 seed: int, batch_size: int,
                 one_dataset_per_batch: bool = False) -> tf.data.Dataset:
    """Samples examples (or whole batches) from several datasets by weight, then batches.

    Each input is an unbatched, repeating (usually shuffled) dataset of raw-batch examples.
    Sampling is equal by default, whatever the datasets' sizes, and deterministic for a seed.

    Args:
        datasets: one unbatched dataset per source; dataset `i` is tagged `dataset_id = i`
            where its examples lack the key.
        weights: sampling weight per dataset (equal when None).
        seed: sampling seed.
        batch_size: examples per batch (incomplete batches are dropped).
        one_dataset_per_batch: batch each dataset on its own and sample whole batches, so
            every batch comes from a single dataset.

    Returns:
        A dataset of batched dicts.

    Raises:
        ValueError: no datasets, or bad weights.
    """
    if not datasets:
        raise ValueError("mix_datasets needs at least one dataset")
    probs = normalise_weights(weights, len(datasets))
    tagged = [_tag(ds, i) for i, ds in enumerate(datasets)]
    if one_dataset_per_batch:
        tagged = [ds.batch(batch_size, drop_remainder=True) for ds in tagged]
    if len(tagged) == 1:
        mixed = tagged[0]
    else:
        mixed = tf.data.Dataset.sample_from_datasets(tagged, weights=probs, seed=seed)
    if not one_dataset_per_batch:
        mixed = mixed.batch(batch_size, drop_remainder=True)
    return mixed
