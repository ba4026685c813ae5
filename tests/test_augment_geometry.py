"""Flip, jitter and Mosaic: boxes checked on the pixels, dataset isolation, partners."""
import numpy as np
import pytest
import tensorflow as tf

from data_pipelines.augment import random_flip, random_jitter, random_mosaic
from data_pipelines.augment.partners import same_dataset_partners
from tests.test_augment_common import (SIZE, check_boxes_on_pixels, check_no_foreign_pixels,
                                 check_structure, make_batch, to_numpy)

SEEDS = (0, 1, 2)


def _seed(i):
    return tf.constant([i, 17], tf.int32)


def test_flip_is_exact_mirror():
    """Flip with chance 1 mirrors pixels exactly and the boxes with them."""
    batch = make_batch(1)
    out = to_numpy(random_flip(batch, _seed(0), 1.0))
    check_structure(batch, out)
    np.testing.assert_array_equal(out["images"], np.asarray(batch["images"])[:, :, ::-1])
    boxes = np.asarray(batch["boxes"])
    valid = np.asarray(batch["classes"]) >= 0
    expected = np.stack([SIZE - boxes[..., 2], boxes[..., 1], SIZE - boxes[..., 0],
                         boxes[..., 3]], -1)
    np.testing.assert_allclose(out["boxes"][valid], expected[valid], atol=1e-4)
    np.testing.assert_array_equal(out["classes"], np.asarray(batch["classes"]))
    assert check_boxes_on_pixels(out) == valid.sum()


def test_flip_probability_zero_is_identity():
    """Flip with chance 0 (one identity tile) leaves pixels and boxes unchanged."""
    batch = make_batch(2)
    out = to_numpy(random_flip(batch, _seed(0), 0.0))
    np.testing.assert_array_equal(out["images"], np.asarray(batch["images"]))
    np.testing.assert_allclose(out["boxes"], np.asarray(batch["boxes"]), atol=1e-4)


@pytest.mark.parametrize("seed", SEEDS)
def test_jitter_boxes_on_pixels(seed):
    """Darknet jitter alone: every box frames its colour on the pixels."""
    batch = make_batch(seed)
    out = random_jitter(batch, _seed(seed), 0.3)
    check_structure(batch, out)
    assert check_boxes_on_pixels(out) > 0
    check_no_foreign_pixels(out)
    assert not np.array_equal(np.asarray(out["images"]), np.asarray(batch["images"]))


@pytest.mark.parametrize("seed", SEEDS)
def test_mosaic_boxes_on_pixels_and_datasets(seed):
    """Mosaic alone: boxes on pixels, no other dataset's pixels, more boxes per image."""
    batch = make_batch(seed)
    out = random_mosaic(batch, _seed(seed), 1.0)
    check_structure(batch, out)
    assert check_boxes_on_pixels(out) > 0
    check_no_foreign_pixels(out)
    counts = (to_numpy(out)["classes"] >= 0).sum(axis=1)
    assert counts.max() > (np.asarray(batch["classes"]) >= 0).sum(axis=1).max()


def test_mosaic_with_jitter_and_flip_boxes_on_pixels():
    """Mosaic with per-tile jitter and flip: boxes on pixels, datasets apart."""
    batch = make_batch(5)
    out = random_mosaic(batch, _seed(5), 1.0, jitter=0.3, flip=0.5)
    check_structure(batch, out)
    assert check_boxes_on_pixels(out) > 0
    check_no_foreign_pixels(out)


def test_mosaic_single_example_dataset_reuses_itself():
    """Too few same-dataset partners: the example and its partners are reused."""
    # Dataset 2 has one example, dataset 1 two: their mosaics repeat their own content.
    batch = make_batch(3, dataset_ids=(0, 0, 0, 0, 0, 1, 1, 2))
    out = to_numpy(random_mosaic(batch, _seed(3), 1.0))
    check_boxes_on_pixels(out)
    check_no_foreign_pixels(out)
    source_classes = set(np.asarray(batch["classes"])[7]) - {-1}
    assert set(out["classes"][7]) - {-1} <= source_classes


def test_partners_same_dataset_distinct_and_reused():
    """Partners share the dataset, are distinct while possible, else repeat or self."""
    dataset_id = tf.constant([0, 1, 0, 0, 2, 1, 0, 0, 3], tf.int32)
    ids = dataset_id.numpy()
    for i in range(20):
        partners = same_dataset_partners(dataset_id, _seed(i), 3).numpy()
        for row, picks in enumerate(partners):
            assert np.all(ids[picks] == ids[row])
            others = np.sum(ids == ids[row]) - 1
            if others >= 3:
                assert len(set(picks)) == 3 and row not in picks
            elif others > 0:
                assert row not in picks and len(set(picks)) == others
            else:
                assert np.all(picks == row)


def test_same_seed_same_result_other_seed_differs():
    """Stateless: the same seed gives the same batch, another seed another."""
    batch = make_batch(4)
    first = to_numpy(random_mosaic(batch, _seed(1), 0.5, jitter=0.3, flip=0.5))
    again = to_numpy(random_mosaic(batch, _seed(1), 0.5, jitter=0.3, flip=0.5))
    other = to_numpy(random_mosaic(batch, _seed(2), 0.5, jitter=0.3, flip=0.5))
    for key, value in first.items():
        np.testing.assert_array_equal(value, again[key])
    assert not np.array_equal(first["images"], other["images"])


@pytest.mark.parametrize("change", ([4.3, 0, 4.3, 0], [0, 0, 0, -4.3], [-4.3, -4.3, 0, 0]))
def test_pixel_check_detects_wrong_mosaic_boxes(change):
    """On a mosaic output, boxes shifted or resized by 4.3 px fail the on-pixel check."""
    out = to_numpy(random_mosaic(make_batch(0), _seed(0), 1.0, jitter=0.3))
    assert check_boxes_on_pixels(out) > 0
    boxes = out["boxes"].copy()
    valid = out["classes"] >= 0
    boxes[valid] += np.asarray(change, np.float32)
    with pytest.raises(AssertionError):
        check_boxes_on_pixels({**out, "boxes": boxes})
