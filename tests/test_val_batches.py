"""Validation batches all have one shape, and the filled rows change no loss."""
import numpy as np
import pytest

from tests.tiny_run import tiny_config
from train import data as data_lib
from train.fit import build_trainer
from train.strategy import make_strategy
from data_pipelines.sample_data import ensure_sample_data
from effdet_tf.batch_schema import split_batch


@pytest.fixture(name="cfg", scope="module")
def fixture_cfg(tmp_path_factory):
    """The tiny config on sample sets of 11 validation images (batches of 8 and 3)."""
    root = tmp_path_factory.mktemp("val_batches")
    sample = ensure_sample_data(str(root), seed=0, num_train=8, num_val=11, num_test=4)
    return tiny_config(sample["root"], root / "run")


def test_val_batches_are_filled_and_losses_unchanged(cfg):
    """Every batch has eval.batch_size rows; each head's validation loss is the one of the
    unfilled batches (the filled rows are masked out of every head)."""
    filled = data_lib.make_val_dataset(cfg)
    rows = [(int(images.shape[0]), float(np.sum(targets["head_mask"])))
            for images, targets in filled]
    assert [r for r, _ in rows] == [cfg.eval.batch_size] * 4
    assert [m for _, m in rows] == [8.0, 3.0, 8.0, 3.0]  # one head per example, real rows
    unfilled = data_lib.eval_dataset(cfg, 0, "val")[0].map(split_batch).concatenate(
        data_lib.eval_dataset(cfg, 1, "val")[0].map(split_batch))
    assert [int(images.shape[0]) for images, _ in unfilled] == [8, 3, 8, 3]
    classes = data_lib.class_table(cfg)
    trainer = build_trainer(cfg, make_strategy("default"), classes, steps=1)[0]
    with_fill = trainer.evaluate(filled, verbose=0, return_dict=True)
    without = trainer.evaluate(unfilled, verbose=0, return_dict=True)
    heads = [k for k in without if k.endswith("_loss") and k != "loss"]
    assert len(heads) >= 2
    for key in heads:
        assert with_fill[key] == pytest.approx(without[key], rel=1e-5, abs=1e-6), key


def test_bn_check_takes_only_real_validation_rows(cfg):
    """bn_check's statistics from validation images leave the filling rows out."""
    from train.bn_check import _repeated_images  # pylint: disable=import-outside-toplevel,protected-access  # heavy; the helper under test
    images = _repeated_images(data_lib.make_val_dataset(cfg))
    assert [int(next(images).shape[0]) for _ in range(5)] == [8, 3, 8, 3, 8]
