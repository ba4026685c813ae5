"""A config whose `heads:` section has one detection head trained by two datasets.

In process, on a tiny stand-in backbone: training, the per-dataset evaluation of the
shared head and loading the run all follow the route table.
"""
import json
import os

import pytest

from data_pipelines.sample_data import ensure_sample_data
from effdet_tf.config import config_from_dict
from tests.backbones import tiny_backbone

CLASSES = ["circle", "triangle", "square", "star", "cross", "ring"]


@pytest.fixture(name="shared_head_run", scope="module")
def fixture_shared_head_run(tmp_path_factory):
    """Trains the shared-head config for 2 x 2 steps; returns (config, summary)."""
    import effdet_tf.backbones.cspdarknet53 as csp  # pylint: disable=import-outside-toplevel  # patched
    from train.fit import run_training  # pylint: disable=import-outside-toplevel  # heavy

    sample = ensure_sample_data(str(tmp_path_factory.mktemp("sample")), seed=0,
                                num_train=8, num_val=4, num_test=4)
    datasets = [{"name": n, "root": os.path.join(sample["root"], n), "heads": ["objects"]}
                for n in ("shapes", "signs")]
    cfg = config_from_dict(
        {"name": "shared", "heads": [{"name": "objects", "classes": CLASSES}],
         "data": {"datasets": datasets, "max_boxes": 16},
         "train": {"run_dir": str(tmp_path_factory.mktemp("runs") / "run")}},
        ["data.image_size=128", "train.batch_size=4", "train.steps_per_epoch=2",
         "train.epochs=2", "eval.batch_size=8", "train.precise_bn_steps=1",
         "train.refresh_bn_steps=1", "model.fpn_channels=16", "model.fpn_cells=1",
         "model.head_layers=1"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csp, "build_cspdarknet53", tiny_backbone)
        summary = run_training(cfg, verbose=0)
    return cfg, summary


def test_shared_head_trains_and_is_scored_on_each_dataset(shared_head_run):
    """One head, six classes; its test metrics come per dataset that trains it."""
    _, summary = shared_head_run
    run = summary["run"]
    with open(os.path.join(run, "classes.json"), encoding="utf-8") as stream:
        classes = json.load(stream)
    assert list(classes) == ["objects"] and classes["objects"]["names"] == CLASSES
    assert set(summary["metrics"]) == {"objects/shapes", "objects/signs"}
    assert all(m["num_images"] == 4 for m in summary["metrics"].values())
    with open(os.path.join(run, "log.csv"), encoding="utf-8") as stream:
        header = stream.readline().strip().split(",")
    assert "objects_loss" in header and "val_objects_loss" in header


def test_shared_head_run_loads_back(shared_head_run):
    """Loading the run rebuilds the one six-class head."""
    import effdet_tf.backbones.cspdarknet53 as csp  # pylint: disable=import-outside-toplevel  # patched
    from train.run_dir import load_run  # pylint: disable=import-outside-toplevel  # heavy

    cfg, summary = shared_head_run
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csp, "build_cspdarknet53", tiny_backbone)
        loaded_cfg, detector, _ = load_run(summary["run"], weights="last")
    assert loaded_cfg.head_names == cfg.head_names == ["objects"]
    assert detector.num_classes == {"objects": 6}
