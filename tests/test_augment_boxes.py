"""Box helpers (transform, clip, filter, pack) and the on-pixel checker itself."""
import numpy as np
import pytest
import tensorflow as tf

from data_pipelines.augment import boxes as box_ops
from tests.test_augment_common import check_boxes_on_pixels, make_batch, to_numpy


def test_transform_mirrors_and_orders_corners():
    """A negative scale mirrors the axis and keeps x1 <= x2."""
    boxes = tf.constant([[10.0, 20.0, 30.0, 60.0]])
    out = box_ops.transform_boxes(boxes, -1.0, 100.0, 0.5, 4.0).numpy()
    np.testing.assert_allclose(out, [[70.0, 14.0, 90.0, 34.0]])


def test_clean_clips_drops_and_packs():
    """Clipping to the image, dropping thin or mostly-outside boxes, valid rows first."""
    boxes = tf.constant([[[-1, -1, -1, -1], [-20, 0, 20, 10], [5, 5, 6, 50],
                          [-90, 0, 10, 10], [50, 50, 120, 70]]], tf.float32)
    classes = tf.constant([[-1, 1, 2, 3, 4]], tf.int32)
    out_boxes, out_classes = box_ops.clean_boxes(boxes, classes, 100, 0.25, 2.0)
    np.testing.assert_array_equal(out_classes.numpy(), [[1, 4, -1, -1, -1]])
    np.testing.assert_allclose(out_boxes.numpy()[0, :2], [[0, 0, 20, 10], [50, 50, 100, 70]])
    assert np.all(out_boxes.numpy()[0, 2:] == -1)


def test_pack_keeps_order_and_truncates():
    """Kept rows keep their order; more than M kept rows keep the first M."""
    boxes = tf.reshape(tf.range(6 * 4, dtype=tf.float32), [1, 6, 4])
    classes = tf.constant([[0, 1, 2, 3, 4, 5]], tf.int32)
    keep = tf.constant([[False, True, True, False, True, True]])
    out_boxes, out_classes = box_ops.pack_boxes(boxes, classes, keep, 3)
    np.testing.assert_array_equal(out_classes.numpy(), [[1, 2, 4]])
    np.testing.assert_array_equal(out_boxes.numpy()[0, 2], [16, 17, 18, 19])


@pytest.mark.parametrize("change", ([-4.3, 0, 0, 0], [0, 0, 4.3, 0], [0, 4.3, 0, 0],
                                    [0, 0, 0, -4.3], [5.3, 0, 5.3, 0]))
def test_pixel_checker_catches_wrong_boxes(change):
    """The on-pixel check fails for a box 4.3 px too big, too small or shifted (tol 2)."""
    batch = to_numpy(make_batch(0))
    assert check_boxes_on_pixels(batch) > 0
    boxes = batch["boxes"].copy()
    boxes[0, 0] += np.asarray(change, np.float32)
    with pytest.raises(AssertionError):
        check_boxes_on_pixels({**batch, "boxes": boxes})


def test_pixel_checker_catches_wrong_class():
    """A box labelled with another class of its dataset fails the colour check."""
    batch = to_numpy(make_batch(0))
    classes = batch["classes"].copy()
    classes[0, 0] = (classes[0, 0] + 1) % 3
    with pytest.raises(AssertionError):
        check_boxes_on_pixels({**batch, "classes": classes})
