"""Tests of effdet_tf.anchors."""
import numpy as np
import pytest

from effdet_tf import anchors
from effdet_tf.targets import pairwise_iou
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


def test_check_aspect_ratios_accepts_and_names_the_key():
    assert anchors.check_aspect_ratios([1, 2, 0.5, 4, 0.25]) == (1.0, 2.0, 0.5, 4.0, 0.25)
    for bad, message in (([], "non-empty list"), ("1,2", "non-empty list"),
                         ([1, 0], "0 is not a positive"), ([1, -2], "-2 is not a positive"),
                         ([1, float("inf")], "inf is not a positive"),
                         ([1, True], "True is not a positive"), ([2, 2.0], "given twice")):
        with pytest.raises(ConfigError, match=f"^model.anchor_aspect_ratios: .*{message}"):
            anchors.check_aspect_ratios(bad, "model.anchor_aspect_ratios")


def _best_iou(box, candidates):
    """IoU of one xyxy box with each candidate anchor (the matcher's IoU)."""
    return np.asarray(pairwise_iou(candidates, np.asarray(box, np.float32)[None, None]))[0, :, 0]


def test_extra_aspect_ratios_cover_tall_and_wide_boxes():
    """Ratios 4 and 1/4 add 6 anchors per location and fit a curtain-like box (16 x 64 px,
    4 times as tall as wide, centred on a P3 location) and its wide twin exactly, where the
    best of the default three ratios (the 2:1 one) overlaps them by about half."""
    five = anchors.generate_anchors(128, aspect_ratios=(1.0, 2.0, 0.5, 4.0, 0.25))
    assert five.shape == (15 * (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1), 4)
    three = anchors.generate_anchors(128)
    for box in (np.array([52.0, 28.0, 68.0, 92.0]), np.array([28.0, 52.0, 92.0, 68.0])):
        assert _best_iou(box, three).max() < 0.6
        assert _best_iou(box, five).max() > 0.99
