"""Precise BatchNorm: recompute BN moving statistics after training.

With momentum 0.99, BN running averages trail the weights by about a hundred steps, so
after a short run (a CPU demo, a few epochs) inference-mode outputs can differ badly from
training-mode ones. Re-estimating the statistics as an exact average over a few clean
training batches fixes that at the cost of a few forward passes (Wu and Johnson,
"Rethinking 'Batch' in BatchNorm", 2021). Frozen BN layers (a frozen backbone) are left
untouched.
"""
from typing import Iterable, List

import keras
import numpy as np
from tqdm import tqdm

from train.compiled_call import statistics_pass


def trainable_batchnorms(model: keras.Model) -> List[keras.layers.BatchNormalization]:
    """BatchNormalization layers of `model` (nested models included) that are trainable."""
    # pylint: disable=protected-access  # Keras has no public recursive layer iterator
    return [layer for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]


def recalibrate_batchnorm(model: keras.Model, images: Iterable, *, steps: int,
                          progress: bool = True) -> int:
    """Replaces BN moving statistics with their average over `steps` batches.

    Each batch's statistics are read with momentum 0 and averaged exactly (equal weight
    per batch), so the result depends only on the current weights.

    Args:
        model: the detector.
        images: iterable of image batches (model input); an iterator is read on from
            where it stands, so one infinite iterator can serve many calls.
        steps: batches to average.
        progress: show a progress bar (in a terminal).

    Returns:
        Number of batches used (0 when there is no trainable BN layer or no batch; the
        statistics are then unchanged, as they are when a batch gave non-finite ones).
    """
    layers = trainable_batchnorms(model)
    if not layers or steps <= 0:
        return 0
    saved = [(layer.momentum, layer.moving_mean.numpy(), layer.moving_variance.numpy())
             for layer in layers]
    sums = [[np.zeros_like(mean), np.zeros_like(variance)] for _, mean, variance in saved]
    forward = statistics_pass(model)  # traced once per model (momentum 0 from here)
    used = 0
    try:
        for layer in layers:
            layer.momentum = 0.0  # moving statistics = this batch's statistics
        # disable=None: tqdm's own rule, no bar when stderr is not a terminal (a log file).
        for batch in tqdm(images, total=steps, desc="precise BN", unit="batch", leave=False,
                          disable=None if progress else True):
            forward(batch)
            for layer, acc in zip(layers, sums):
                acc[0] += layer.moving_mean.numpy()
                acc[1] += layer.moving_variance.numpy()
            used += 1
            if used >= steps:
                break
    finally:
        for layer, (momentum, _, _) in zip(layers, saved):
            layer.momentum = momentum
    finite = used and all(np.isfinite(acc[1]).all() and np.isfinite(acc[0]).all()
                          for acc in sums)
    for layer, (_, mean, variance), acc in zip(layers, saved, sums):
        layer.moving_mean.assign(acc[0] / used if finite else mean)
        layer.moving_variance.assign(acc[1] / used if finite else variance)
    return used if finite else 0
