"""Tests of the preview CLI (python -m data_pipelines.preview)."""
import numpy as np
import pytest
from PIL import Image

from effdet_tf.cli import run_cli
from data_pipelines.draw import batch_grid
from data_pipelines.preview import main
from tests.test_coco_source import make_dataset

CONFIG = """
name: preview_test
data:
  datasets:
    - name: alpha
      root: {root}/alpha
    - name: beta
      root: {root}/beta
  image_size: 128
  max_boxes: 4
augment:
  mosaic: 0.5
  cutmix: 0.3
train:
  batch_size: 4
  seed: 3
"""


def _config(tmp_path):
    for i, name in enumerate(("alpha", "beta")):
        make_dataset(tmp_path / name, 4, size=(90, 60), first_id=10 * i + 1)
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(root=tmp_path), encoding="utf-8")
    return path


def test_preview_writes_grids(tmp_path, capsys):
    """The CLI writes raw (and augmented) grids per dataset and batch."""
    config = _config(tmp_path)
    out = tmp_path / "out"
    assert main(["--config", str(config), "--out", str(out), "--set", "train.batch_size=3",
                 "--batches", "2"]) == 0
    printed = capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    raw = [f"{d}_batch{k}_raw.png" for d in ("alpha", "beta") for k in (0, 1)]
    assert set(raw) <= set(names)
    if "not available" not in printed:  # the augmentation is present
        assert {n.replace("_raw", "") for n in raw} <= set(names)
    with Image.open(out / "alpha_batch0_raw.png") as img:
        assert img.size == (2 * 256, 2 * 256)


def test_preview_reports_data_errors(tmp_path, capsys):
    """A missing image ends the CLI with exit 2 and a message naming the id."""
    config = _config(tmp_path)
    (tmp_path / "beta" / "images" / "img_12.jpg").unlink()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["--config", str(config), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 1 of 2 datasets have problems")
    assert "image id 12" in err and "img_12.jpg" in err


def test_batch_grid_draws_boxes():
    """Boxes of both datasets are drawn; padding rows are not."""
    batch = {"images": np.zeros((2, 64, 64, 3), np.uint8),
             "boxes": np.array([[[8, 8, 40, 40], [-1, -1, -1, -1]]] * 2, np.float32),
             "classes": np.array([[1, -1], [0, -1]], np.int32),
             "dataset_id": np.array([0, 1], np.int32)}
    grid = np.asarray(batch_grid(batch, [["a", "b"], ["c"]], tile=64))
    assert grid.shape == (64, 128, 3)
    assert grid[:, :64].any() and grid[:, 64:].any()
    assert not grid[60:, :64].any()
