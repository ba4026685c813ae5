"""The tiny two-head training config of the end-to-end tests, on the embedded sample data."""
import os
from typing import Any, Dict, Sequence

from data_pipelines.sample_data import ensure_sample_data
from effdet_tf.config import ExperimentConfig, config_from_dict

# One BiFPN cell and head layer (tests/test_bifpn.py and tests/test_detector.py cover the
# full stacks), and two batches of BN statistics after training and before each
# validation (the defaults, 32 and 8, re-read the 16 training images many times at batch 4).
TINY = ["data.image_size=128", "train.batch_size=4", "train.steps_per_epoch=2",
        "train.epochs=2", "eval.batch_size=8", "train.optimizer=sgd",
        "train.learning_rate=0.01", "train.precise_bn_steps=2", "train.refresh_bn_steps=2",
        "model.fpn_cells=1", "model.head_layers=1"]


def tiny_config(data_dir: str, run_dir: Any, extra: Sequence[str] = ()) -> ExperimentConfig:
    """The tiny run on the `shapes` and `signs` sample datasets under `data_dir`."""
    datasets = [{"name": n, "root": os.path.join(data_dir, n)} for n in ("shapes", "signs")]
    return config_from_dict({"name": "tiny", "data": {"datasets": datasets, "max_boxes": 16},
                             "train": {"run_dir": str(run_dir)}}, TINY + list(extra))


def sample_data(tmp_path_factory: Any) -> Dict[str, Any]:
    """Small sample datasets (16 train, 8 val, 8 test images per dataset) in a temp folder."""
    out = tmp_path_factory.mktemp("sample")
    return ensure_sample_data(str(out), seed=0, num_train=16, num_val=8, num_test=8)
