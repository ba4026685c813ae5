"""Image-level labels survive every augmentation correctly: by area, by blend, or kept.

Each example is one flat colour and carries the one-hot label of that colour, so the
true label of an augmented image can be read off its pixels: the share of the frame
each colour covers (Mosaic, CutMix) or the blend of two colours (MixUp).
"""
import numpy as np
import pytest
import tensorflow as tf

from data_pipelines.augment import YoloV4Augment, random_cutmix, random_mixup, random_mosaic
from data_pipelines.augment.labels import LABEL_EFFECTS, check_effects
from data_pipelines.augment.pipeline import STEPS

SIZE, COUNT = 64, 4
COLOURS = (10, 70, 130, 190)  # example i is flat COLOURS[i] and has label i


def _batch():
    images = np.stack([np.full((SIZE, SIZE, 3), c, np.uint8) for c in COLOURS])
    boxes = np.full((COUNT, 2, 4), -1, np.float32)
    boxes[:, 0] = [8, 8, 40, 40]
    classes = np.full((COUNT, 2), -1, np.int32)
    classes[:, 0] = 0
    mask = np.ones((COUNT, COUNT), np.float32)
    mask[0, 3] = 0.0  # example 0 does not know label 3
    return {"images": tf.constant(images), "boxes": tf.constant(boxes),
            "classes": tf.constant(classes), "dataset_id": tf.zeros([COUNT], tf.int32),
            "labels/kind": tf.constant(np.eye(COUNT, dtype=np.float32)),
            "label_mask/kind": tf.constant(mask)}


def _colour_shares(images):
    """`[B, COUNT]`: the share of each example's colour in each image."""
    images = np.asarray(images)[..., 0].astype(np.int32)
    return np.stack([(images == c).mean(axis=(1, 2)) for c in COLOURS], axis=-1)


def _check_masks(batch, out, shown):
    """A label is known only if every example showing in the image knows it."""
    source_mask = np.asarray(batch["label_mask/kind"])
    expected = np.stack([np.prod(np.where(s[:, None] > 0, source_mask, 1.0), axis=0)
                         for s in shown])
    np.testing.assert_array_equal(np.asarray(out["label_mask/kind"]), expected)


@pytest.mark.parametrize("seed", (0, 1, 2))
def test_mosaic_labels_follow_the_area_of_each_tile(seed):
    """A four-image mosaic's label is each source's share of the frame."""
    batch = _batch()
    out = random_mosaic(batch, tf.constant([seed, 1], tf.int32), 1.0)
    shares = _colour_shares(out["images"])
    labels = np.asarray(out["labels/kind"])
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(labels, shares, atol=0.02)
    assert (labels.max(axis=1) < 0.99).any()  # some images really are mixed
    _check_masks(batch, out, labels)


@pytest.mark.parametrize("seed", (0, 1, 2))
def test_cutmix_labels_follow_the_pasted_area(seed):
    """The pasted rectangle's share of the frame goes to the partner's label."""
    batch = _batch()
    out = random_cutmix(batch, tf.constant([seed, 2], tf.int32), 1.0)
    labels = np.asarray(out["labels/kind"])
    np.testing.assert_allclose(labels, _colour_shares(out["images"]), atol=1e-5)
    assert (labels.max(axis=1) < 1.0).any()
    _check_masks(batch, out, labels)


def test_mixup_labels_blend_like_the_pixels():
    """MixUp halves each label, as it halves each image."""
    batch = _batch()
    out = random_mixup(batch, tf.constant([3, 3], tf.int32), 1.0)
    labels = np.asarray(out["labels/kind"])
    pixels = np.asarray(out["images"])[:, 0, 0, 0].astype(np.float32)
    np.testing.assert_allclose(pixels, labels @ np.array(COLOURS, np.float32), atol=0.5)
    assert sorted(set(np.round(labels.max(axis=1), 3))) in ([0.5], [0.5, 1.0], [1.0])
    _check_masks(batch, out, labels)


def test_geometry_and_colour_keep_labels():
    """Jitter, flip and HSV leave the labels (and masks) as they were."""
    batch = _batch()
    augment = YoloV4Augment(SIZE, mosaic=0.0, cutmix=0.0, jitter=0.3, flip=1.0)
    out = augment(batch, tf.constant([4, 4], tf.int32))
    for key in ("labels/kind", "label_mask/kind"):
        np.testing.assert_array_equal(np.asarray(out[key]), np.asarray(batch[key]))


def test_whole_chain_keeps_labels_a_distribution():
    """Through the compiled chain with every mixing step on, each row still sums to 1."""
    batch = _batch()
    augment = YoloV4Augment(SIZE, mosaic=1.0, cutmix=1.0, mixup=1.0)
    out = augment(batch, tf.constant([5, 5], tf.int32))
    labels = np.asarray(out["labels/kind"])
    assert out["labels/kind"].dtype == tf.float32 and labels.shape == (COUNT, COUNT)
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
    assert set(np.unique(np.asarray(out["label_mask/kind"]))) <= {0.0, 1.0}


def test_every_step_declares_its_label_effect():
    """The chain refuses a step that says nothing about image-level labels."""
    check_effects(STEPS)
    assert set(LABEL_EFFECTS.values()) == {"area", "blend", "keep"}
    with pytest.raises(ValueError, match="rotate"):
        check_effects(STEPS + ("rotate",))
