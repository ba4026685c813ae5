"""Tests of data_pipelines.mixing: weights, determinism, one dataset per batch."""
import numpy as np
import pytest
import tensorflow as tf

from data_pipelines.coco import CocoSource
from data_pipelines.mixing import mix_datasets, normalise_weights
from tests.test_coco_source import make_dataset


def _toy(dataset_id, size, tag=True):
    """A repeating dataset of `size` examples with image ids dataset_id*1000 + k."""
    ids = np.arange(size, dtype=np.int64) + 1000 * dataset_id
    ex = {"image_id": ids, "boxes": np.zeros((size, 2, 4), np.float32)}
    if tag:
        ex["dataset_id"] = np.full(size, dataset_id, np.int32)
    return tf.data.Dataset.from_tensor_slices(ex).shuffle(size, seed=dataset_id).repeat()


def _ids(ds, batches):
    out = [{k: v.numpy() for k, v in b.items()} for b in ds.take(batches)]
    return (np.concatenate([b["dataset_id"] for b in out]),
            np.concatenate([b["image_id"] for b in out]), out)


def test_equal_sampling_whatever_the_sizes():
    """Equal default weights sample a 5-image and a 500-image dataset equally."""
    ds = mix_datasets([_toy(0, 5), _toy(1, 500)], seed=1, batch_size=50)
    dataset_ids, image_ids, _ = _ids(ds, 20)
    share = (dataset_ids == 0).mean()
    assert 0.45 < share < 0.55
    assert ((image_ids // 1000) == dataset_ids).all()


def test_weights_and_untagged_inputs():
    """Weights set the mix; untagged inputs get their position as dataset id."""
    ds = mix_datasets([_toy(0, 10, tag=False), _toy(1, 10, tag=False)], weights=[3, 1],
                      seed=2, batch_size=100)
    dataset_ids, image_ids, _ = _ids(ds, 10)
    assert ds.element_spec["dataset_id"].dtype == tf.int32
    assert 0.70 < (dataset_ids == 0).mean() < 0.80
    assert ((image_ids // 1000) == dataset_ids).all()
    assert normalise_weights(None, 4) == [0.25] * 4
    with pytest.raises(ValueError, match="2 sampling weights for 3"):
        normalise_weights([1, 2], 3)
    with pytest.raises(ValueError, match="positive sum"):
        normalise_weights([0, 0], 2)


def test_one_dataset_per_batch():
    """With one_dataset_per_batch every batch holds a single dataset id."""
    ds = mix_datasets([_toy(0, 7), _toy(1, 9), _toy(2, 3)], seed=0, batch_size=4,
                      one_dataset_per_batch=True)
    _, _, batches = _ids(ds, 30)
    per_batch = [set(b["dataset_id"].tolist()) for b in batches]
    assert all(len(s) == 1 for s in per_batch)
    assert {next(iter(s)) for s in per_batch} == {0, 1, 2}
    assert all(b["image_id"].shape == (4,) for b in batches)


def test_same_seed_same_sequence_real_pipeline(tmp_path):
    """Same seed, same dataset ids and image ids; another seed differs."""
    sources = [CocoSource(f"s{i}", str(make_dataset(tmp_path / f"s{i}", 5, size=(40, 30),
                                                    first_id=10 * i + 1)),
                          str(tmp_path / f"s{i}" / "images"), dataset_id=i) for i in range(2)]

    def run(seed):
        per_source = [src.dataset(32, 4, shuffle=True, seed=seed + i, repeat=True,
                                  with_meta=True) for i, src in enumerate(sources)]
        ds = mix_datasets(per_source, seed=seed, batch_size=4)
        dataset_ids, image_ids, _ = _ids(ds, 6)
        return dataset_ids.tolist(), image_ids.tolist()

    first, again, other = run(7), run(7), run(8)
    assert first == again
    assert first != other
    assert set(first[0]) == {0, 1}
    assert all((iid > 10) == (did == 1) for did, iid in zip(*first))
