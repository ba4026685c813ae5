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


def trainable_batchnorms(model: keras.Model) -> List[keras.layers.BatchNormalization]:
    """BatchNormalization layers of `model` (nested models included) that are trainable."""
    # pylint: disable=protected-access  # Keras has no public recursive layer iterator
    return [layer for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]


def recalibrate_batchnorm(model: keras.Model, images: Iterable, *, steps: int) -> int:
    """Replaces BN moving statistics with their average over `steps` batches.

    Args:
        model: the detector.
        images: iterable of image batches (model input).
        steps: batches to average.

    Returns:
        Number of batches used (0 when there is no trainable BN layer or no batch).
    """
    layers = trainable_batchnorms(model)
    if not layers or steps <= 0:
        return 0
    saved = {id(layer): (layer.momentum, layer.moving_mean.numpy(),
                         layer.moving_variance.numpy()) for layer in layers}
    used = 0
    try:
        for batch in tqdm(images, total=steps, desc="precise BN", unit="batch", leave=False):
            for layer in layers:
                # new = m * old + (1 - m) * batch with m = k / (k + 1): an exact running mean.
                layer.momentum = used / (used + 1.0)
            model(batch, training=True)
            used += 1
            if used >= steps:
                break
    finally:
        for layer in layers:
            momentum, mean, variance = saved[id(layer)]
            layer.momentum = momentum
            if used == 0:
                layer.moving_mean.assign(mean)
                layer.moving_variance.assign(variance)
    if used and not all(np.isfinite(layer.moving_variance.numpy()).all() for layer in layers):
        for layer in layers:
            _, mean, variance = saved[id(layer)]
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
        return 0
    return used
