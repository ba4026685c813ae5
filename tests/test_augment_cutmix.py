"""CutMix (with boxes) and MixUp: boxes on pixels, occlusion, same-dataset partners."""
import numpy as np
import pytest
import tensorflow as tf

from data_pipelines.augment import random_cutmix, random_mixup
from data_pipelines.augment.cutmix import occlude_boxes
from tests.test_augment_common import (check_boxes_on_pixels, check_no_foreign_pixels,
                                       check_structure, make_batch, to_numpy)


def _seed(i):
    return tf.constant([i, 5], tf.int32)


@pytest.mark.parametrize("seed", (0, 1, 2, 3))
def test_cutmix_boxes_on_pixels_and_datasets(seed):
    """CutMix alone: boxes on pixels, partners from the same dataset only."""
    batch = make_batch(seed)
    out = random_cutmix(batch, _seed(seed), 1.0)
    check_structure(batch, out)
    # A kept box may be up to (1 - min_visible) covered by the pasted rectangle.
    assert check_boxes_on_pixels(out, min_fill=0.2) > 0
    check_no_foreign_pixels(out)
    images, source = np.asarray(out["images"]), np.asarray(batch["images"])
    # Dataset 2 has a single example: no partner, untouched.
    np.testing.assert_array_equal(images[7], source[7])
    assert sum(not np.array_equal(a, b) for a, b in zip(images[:7], source[:7])) >= 4


def test_cutmix_probability_zero_is_identity():
    """CutMix with chance 0 changes nothing."""
    batch = make_batch(1)
    out = to_numpy(random_cutmix(batch, _seed(0), 0.0))
    for key, value in batch.items():
        np.testing.assert_array_equal(out[key], np.asarray(value))


def test_occlusion_cuts_back_drops_or_keeps():
    """Covered boxes are cut back, emptied, or kept whole around a hole."""
    boxes = tf.constant([[[0., 0., 10., 10.], [20., 0., 30., 10.], [40., 0., 50., 10.],
                          [60., 0., 70., 10.]]])
    # The rectangle covers x 5..45 and y -1..11 (whole heights), and x 64..66 of the last.
    rect = tf.constant([[5., -1., 45., 11.]])
    cut, visible = occlude_boxes(boxes, rect)
    np.testing.assert_allclose(cut[0, 0], [0, 0, 5, 10])  # right side covered: cut back
    assert cut[0, 1, 2] <= cut[0, 1, 0]  # fully covered: empty
    np.testing.assert_allclose(cut[0, 2], [45, 0, 50, 10])  # left side covered
    np.testing.assert_allclose(visible[0], [50, 0, 50, 100])
    cut, visible = occlude_boxes(boxes, tf.constant([[64., 2., 66., 8.]]))
    np.testing.assert_allclose(cut[0, 3], [60, 0, 70, 10])  # a hole: box kept whole
    np.testing.assert_allclose(visible[0, 3], 88)


def test_mixup_blends_and_unions_boxes():
    """MixUp keeps the example's boxes first and adds the partner's."""
    batch = make_batch(2)
    out = to_numpy(random_mixup(batch, _seed(1), 1.0))
    check_structure(batch, out)
    check_no_foreign_pixels(out)
    counts_in = (np.asarray(batch["classes"]) >= 0).sum(1)
    counts_out = (out["classes"] >= 0).sum(1)
    assert np.all(counts_out >= counts_in)
    assert counts_out[7] == counts_in[7]  # single-example dataset: no partner
    assert np.all(counts_out[:7] > counts_in[:7])
    for i, count in enumerate(counts_in):  # the example's own boxes come first, unchanged
        np.testing.assert_array_equal(out["boxes"][i, :count],
                                      np.asarray(batch["boxes"])[i, :count])
