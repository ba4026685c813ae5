"""Tests of data_pipelines.pipeline: train/eval pipelines from dataset configs."""
import os

import numpy as np
import pytest
import tensorflow as tf

from data_pipelines.pipeline import build_eval_dataset, build_sources, build_train_dataset
from effdet_tf.batch_schema import EXAMPLE_KEYS as TRAIN_KEYS
from effdet_tf.config import DatasetConfig
from effdet_tf.errors import DataError
from tests.conftest import require_shared
from tests.test_coco_source import make_dataset


@pytest.fixture(name="configs")
def fixture_configs(tmp_path):
    """Two tiny datasets (3 and 5 images) with train and val splits."""
    out = []
    for i, (name, count) in enumerate((("alpha", 3), ("beta", 5))):
        root = tmp_path / name
        make_dataset(root, count, size=(40, 30), first_id=100 * i + 1)
        make_dataset(root, count, size=(40, 30), first_id=100 * i + 51, split="val")
        out.append(DatasetConfig(name=name, root=str(root)))
    return out


def test_train_batches_are_infinite_and_raw(configs):
    """Train batches repeat past the data, carry only the raw keys and mix both sets."""
    ds = build_train_dataset(configs, image_size=32, max_boxes=6, batch_size=4, seed=0)
    batches = [{k: v.numpy() for k, v in b.items()} for b in ds.take(5)]
    for b in batches:
        assert tuple(sorted(b)) == tuple(sorted(TRAIN_KEYS))
        assert b["images"].shape == (4, 32, 32, 3) and b["images"].dtype == np.uint8
        assert b["boxes"].shape == (4, 6, 4) and b["boxes"].dtype == np.float32
        assert b["classes"].shape == (4, 6) and b["classes"].dtype == np.int32
        assert b["dataset_id"].shape == (4,) and b["dataset_id"].dtype == np.int32
    ids = np.concatenate([b["dataset_id"] for b in batches])
    assert set(ids.tolist()) == {0, 1}


def test_augmenter_gets_per_batch_seeds(configs):
    """The augmenter is mapped per batch with an int32 [2] seed [seed, batch index]."""
    def augmenter(batch, seed):
        assert seed.dtype == tf.int32 and seed.shape == (2,)
        return dict(batch, classes=tf.fill(tf.shape(batch["classes"]), seed[1]),
                    extra=tf.zeros([1]))

    ds = build_train_dataset(configs, image_size=32, max_boxes=3, batch_size=2, seed=5,
                             augmenter=augmenter, one_dataset_per_batch=True)
    batches = list(ds.take(3))
    assert set(batches[0]) == set(TRAIN_KEYS)
    assert [int(b["classes"][0, 0]) for b in batches] == [0, 1, 2]
    assert all(len(set(b["dataset_id"].numpy().tolist())) == 1 for b in batches)


def test_eval_dataset_every_image_once_in_order(configs):
    """The eval pipeline yields every image once, in file order, with meta keys."""
    ds, source = build_eval_dataset(configs[1], 1, split="val", image_size=32, max_boxes=4,
                                    batch_size=2)
    batches = [{k: v.numpy() for k, v in b.items()} for b in ds]
    assert [len(b["image_id"]) for b in batches] == [2, 2, 1]
    ids = np.concatenate([b["image_id"] for b in batches]).tolist()
    assert ids == source.image_ids == [151, 152, 153, 154, 155]
    assert set(batches[0]) == set(TRAIN_KEYS) | {"image_id", "scale", "pad", "orig_size"}
    assert (np.concatenate([b["dataset_id"] for b in batches]) == 1).all()
    assert source.class_names == ["three", "seven", "ten"]


def test_build_sources_lists_all_problems(configs, tmp_path):
    """Problems of several datasets come in one DataError."""
    os.remove(os.path.join(configs[0].root, "images", "img_2.jpg"))
    broken = DatasetConfig(name="gamma", root=str(tmp_path / "gamma"))
    with pytest.raises(DataError) as err:
        build_sources(configs + [broken], "train")
    text = str(err.value)
    assert text.startswith("2 of 3 datasets have problems (train split)")
    assert "image id 2: file" in text and "img_2.jpg" in text
    assert "instances_train.json: annotation file not found" in text
    assert [s.name for s in build_sources(configs[1:], "train")] == ["beta"]


@pytest.mark.real_data
def test_real_datasets_mix_at_512():
    """Both real datasets validate with zero problems (all splits) and mix into batches."""
    configs = [DatasetConfig(name=n, root=str(require_shared("datasets", n)))
               for n in ("fruits", "household")]
    for split in ("train", "val", "test"):
        assert len(build_sources(configs, split)) == 2
    ds = build_train_dataset(configs, image_size=512, max_boxes=100, batch_size=8, seed=0)
    batch = {k: v.numpy() for k, v in next(iter(ds)).items()}
    assert batch["images"].shape == (8, 512, 512, 3)
    valid = batch["classes"] >= 0
    assert (batch["boxes"][valid] >= 0).all() and (batch["boxes"][valid] <= 512).all()
    assert (batch["classes"] < 3).all()


def test_routes_add_the_head_mask_of_each_example(configs):
    """With a route table, every batch says which heads each example trains."""
    routes = [[1.0, 1.0], [0.0, 1.0]]  # alpha trains both heads, beta the second
    ds = build_train_dataset(configs, image_size=32, max_boxes=6, batch_size=8, seed=0,
                             routes=routes)
    batch = next(iter(ds))
    expected = np.array(routes, np.float32)[batch["dataset_id"].numpy()]
    np.testing.assert_array_equal(batch["head_mask"].numpy(), expected)
    val, _ = build_eval_dataset(configs[1], 1, split="val", image_size=32, max_boxes=4,
                                batch_size=2, routes=routes)
    np.testing.assert_array_equal(next(iter(val))["head_mask"].numpy(), [[0, 1], [0, 1]])


def test_batches_follow_the_batch_schema(configs):
    """Every key a training batch carries has the dtype and rank the schema declares."""
    from effdet_tf.batch_schema import FIELDS  # pylint: disable=import-outside-toplevel

    ds = build_train_dataset(configs, image_size=32, max_boxes=6, batch_size=4, seed=0,
                             routes=[[1.0, 0.0], [0.0, 1.0]],
                             background=[[0.0, 1.0], [0.0, 0.0]])
    batch = next(iter(ds))
    assert set(batch) == set(FIELDS)
    for key, field in FIELDS.items():
        assert batch[key].dtype.name == field.dtype, key
        assert batch[key].shape.rank == len(field.shape), key
