"""Tests of effdet_tf.anchors."""
import numpy as np
import pytest

from effdet_tf import anchors
from effdet_tf.errors import ConfigError


def test_count_at_512():
    boxes = anchors.generate_anchors(512)
    assert boxes.shape == (49104, 4)
    assert boxes.dtype == np.float32
    assert anchors.num_anchors(512) == 49104
    assert anchors.num_anchors(128) == 9 * (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1)


def test_geometry_first_location():
    """Sizes and aspect ratios of the 9 anchors at the first P3 location."""
    boxes = anchors.generate_anchors(128)
    first = boxes[:9]
    centres = (first[:, :2] + first[:, 2:]) / 2
    np.testing.assert_allclose(centres, 4.0)
    w = first[:, 2] - first[:, 0]
    h = first[:, 3] - first[:, 1]
    # Scale outer, ratio inner: size 4 * 8 * 2**(i/3), ratios 1, 2, 0.5 (w / h).
    for scale_index in range(3):
        base = 32.0 * 2 ** (scale_index / 3)
        for ratio_index, ratio in enumerate((1.0, 2.0, 0.5)):
            k = scale_index * 3 + ratio_index
            np.testing.assert_allclose(w[k] * h[k], base * base, rtol=1e-5)
            np.testing.assert_allclose(w[k] / h[k], ratio, rtol=1e-5)


def test_order_levels_then_y_then_x():
    boxes = anchors.generate_anchors(128)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    # Second location of P3 is x = 12, y = 4 (x varies fastest).
    np.testing.assert_allclose(centres[9], [12.0, 4.0])
    np.testing.assert_allclose(centres[9 * 16], [4.0, 12.0])
    # P4 starts after the 16 x 16 P3 grid; its first centre is (8, 8).
    np.testing.assert_allclose(centres[9 * 256], [8.0, 8.0])
    # The last anchor is P7's single location, centred in the image.
    np.testing.assert_allclose(centres[-1], [64.0, 64.0])


@pytest.mark.parametrize("size", [100, 0, -128, 130.5])
def test_bad_size(size):
    with pytest.raises(ConfigError, match="multiple of 128"):
        anchors.generate_anchors(size)
