"""Tests of data_pipelines.tfds_source on TFDS mock data (offline)."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines.tfds_source import TfdsSource


def test_voc_mock_examples():
    """Mocked voc/2007 examples have the raw-batch keys, shapes and valid boxes."""
    with tfds.testing.mock_data(num_examples=4):
        src = TfdsSource("voc/2007", split="train", dataset_id=1)
        assert src.class_names[:2] == ["aeroplane", "bicycle"] and src.num_classes == 20
        assert src.category_ids == list(range(20))
        with pytest.warns(UserWarning, match="more than max_boxes=4"):
            examples = [{k: v.numpy() for k, v in ex.items()}
                        for ex in src.dataset(64, 4, with_meta=True)]
    assert len(examples) == 4
    assert [int(ex["image_id"]) for ex in examples] == [0, 1, 2, 3]
    for ex in examples:
        assert ex["images"].shape == (64, 64, 3) and ex["images"].dtype == np.uint8
        assert ex["boxes"].shape == (4, 4) and ex["boxes"].dtype == np.float32
        assert ex["classes"].shape == (4,) and ex["classes"].dtype == np.int32
        assert ex["dataset_id"] == 1
        valid = ex["classes"] >= 0
        boxes = ex["boxes"][valid]
        assert (boxes >= 0).all() and (boxes <= 64).all()
        assert (boxes[:, 2:] >= boxes[:, :2]).all()
        assert (ex["classes"][valid] < 20).all()
        # Boxes map back inside the original image.
        orig = (boxes - np.tile(ex["pad"], 2)) / ex["scale"]
        h, w = ex["orig_size"]
        assert (orig <= np.array([w, h, w, h]) + 1e-3).all()


def test_voc_mock_repeat_shuffle():
    """Shuffled repeating TFDS examples: each epoch complete, same seed same order."""
    with tfds.testing.mock_data(num_examples=3):
        src = TfdsSource("voc/2007", split="train")

        def ids():
            ds = src.dataset(64, 50, shuffle=True, seed=3, repeat=True, with_meta=True)
            return [int(ex["image_id"]) for ex in ds.take(6)]

        first, again = ids(), ids()
    assert sorted(first[:3]) == [0, 1, 2] and sorted(first[3:]) == [0, 1, 2]
    assert first == again
