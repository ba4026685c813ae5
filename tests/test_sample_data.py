"""Tests of the generated sample datasets (data_pipelines.sample_data)."""
import contextlib
import hashlib
import io
import json
import os
import pathlib

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from data_pipelines import sample_data, sample_shapes
from effdet_tf.errors import DataError

SEED = 3
SIZES = {"num_train": 24, "num_val": 6, "num_test": 6}
TINY = {"num_train": 2, "num_val": 1, "num_test": 1}


def _tree_hashes(root: pathlib.Path) -> dict[str, str]:
    """sha256 of every file under root, keyed by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _load(path: str) -> COCO:
    """pycocotools' own loader, quietly."""
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(path)


@pytest.fixture(name="generated", scope="module")
def fixture_generated(tmp_path_factory):
    """One small generated folder shared by the read-only tests."""
    return sample_data.generate(tmp_path_factory.mktemp("sample") / "data", seed=SEED, **SIZES)


def test_layout_and_result_paths(generated):
    """The folder layout, the marker and the returned paths agree."""
    root = pathlib.Path(generated["root"])
    assert set(generated["datasets"]) == {"shapes", "signs"}
    for name, info in generated["datasets"].items():
        assert info["root"] == str(root / name)
        assert (root / name / "SOURCE.md").read_text(encoding="utf-8").startswith(f"# {name}")
        for split in sample_data.SPLITS:
            assert pathlib.Path(info["annotations"][split]).is_file()
        assert info["stats"]["train"]["images"] == SIZES["num_train"]
    assert (root / sample_data.MARKER).is_file()
    assert generated["generated"] is True


def test_same_seed_gives_identical_files(generated, tmp_path):
    """Same seed: byte-identical tree; images depend on seed, not split sizes."""
    again = sample_data.generate(tmp_path / "again", seed=SEED, **SIZES)
    assert _tree_hashes(pathlib.Path(again["root"])) == _tree_hashes(
        pathlib.Path(generated["root"]))
    # One generator per image: the first images do not depend on the split sizes...
    smaller = pathlib.Path(sample_data.generate(tmp_path / "small", seed=SEED, **TINY)["root"])
    image = pathlib.Path("shapes/images/train_0000.jpg")
    reference = (pathlib.Path(generated["root"]) / image).read_bytes()
    assert (smaller / image).read_bytes() == reference
    # ...but do depend on the seed.
    other = pathlib.Path(sample_data.generate(tmp_path / "other", seed=SEED + 1, **TINY)["root"])
    assert (other / image).read_bytes() != reference


def test_each_json_loads_and_is_consistent(generated):
    """pycocotools loads every json; ids unique; files match their entries."""
    for info in generated["datasets"].values():
        image_ids, ann_ids = set(), set()
        for split in sample_data.SPLITS:
            coco = _load(info["annotations"][split])
            assert sorted(coco.getCatIds()) == [1, 2, 3]
            assert [c["name"] for c in coco.loadCats([1, 2, 3])] == info["class_names"]
            assert len(coco.getImgIds()) == info["stats"][split]["images"]
            assert not image_ids & set(coco.getImgIds())
            assert not ann_ids & set(coco.getAnnIds())
            image_ids |= set(coco.getImgIds())
            ann_ids |= set(coco.getAnnIds())
            for img in coco.loadImgs(coco.getImgIds()):
                with Image.open(pathlib.Path(info["image_dir"]) / img["file_name"]) as pil:
                    assert pil.format == "JPEG" and pil.mode == "RGB"
                    assert pil.size == (img["width"], img["height"])
            for ann in coco.anns.values():
                assert all(isinstance(v, float) for v in ann["bbox"])
                assert ann["area"] == pytest.approx(ann["bbox"][2] * ann["bbox"][3])
                assert ann["iscrowd"] == 0


def test_class_sets_are_disjoint(generated):
    """The two datasets share no class name."""
    shapes, signs = (set(d["class_names"]) for d in generated["datasets"].values())
    assert len(shapes) == len(signs) == 3 and not shapes & signs


def test_boxes_inside_images_and_not_degenerate(generated):
    """Every box lies inside its image and is at least 4 px wide and high."""
    for info in generated["datasets"].values():
        coco = _load(info["annotations"]["train"])
        for ann in coco.anns.values():
            img = coco.imgs[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            assert w >= 4 and h >= 4
            assert x >= 0 and y >= 0
            assert x + w <= img["width"] and y + h <= img["height"]


def test_object_counts_and_size_distribution(generated):
    """Several labelled objects per image, varied box sizes, varied image shapes."""
    per_size = {"small": 0, "medium": 0, "large": 0}
    low, high = sample_data.IMAGE_SIDE_RANGE
    sides, ratios = [], []
    for info in generated["datasets"].values():
        for split in sample_data.SPLITS:
            coco = _load(info["annotations"][split])
            counts = [len(coco.getAnnIds(imgIds=[i])) for i in coco.getImgIds()]
            assert min(counts) >= 1 and max(counts) <= sample_data.MAX_OBJECTS
            assert np.mean(counts) >= 3
            for img in coco.imgs.values():
                sides += [img["width"], img["height"]]
                ratios.append(img["width"] / img["height"])
            for key, value in info["stats"][split]["per_size"].items():
                per_size[key] += value
        assert all(v > 0 for v in info["stats"]["train"]["per_class"].values())
    total = sum(per_size.values())
    assert per_size["medium"] >= 0.5 * total and per_size["large"] >= 0.05 * total, per_size
    assert low <= min(sides) and max(sides) <= high
    assert min(ratios) < 0.85 and max(ratios) > 1.15


def test_occlusion_keeps_objects_mostly_visible():
    """Occlusion happens but never hides more than allowed."""
    rng = np.random.default_rng(0)
    visible = []
    for _ in range(20):
        _, objects = sample_shapes.draw_scene(rng, 200, 200, ["square"] * 6)
        visible += [o.visible for o in objects]
    assert min(visible) >= sample_shapes.MIN_VISIBLE
    assert min(visible) < 1.0  # some occlusion does happen


def test_composite_holds_objects_of_both_datasets(generated):
    """composite.json lists boxes of both datasets inside the image."""
    payload = json.loads(pathlib.Path(generated["composite_json"]).read_text(encoding="utf-8"))
    with Image.open(generated["composite"]) as pil:
        assert pil.size == (payload["width"], payload["height"])
    for name, objects in payload["objects"].items():
        assert len(objects) >= 2
        classes = generated["datasets"][name]["class_names"]
        for obj in objects:
            x, y, w, h = obj["bbox"]
            assert classes[obj["category_id"] - 1] == obj["name"]
            assert 0 <= x and x + w <= payload["width"] and 0 <= y and y + h <= payload["height"]


def test_refuses_non_empty_folder(tmp_path):
    """A folder with foreign files is refused, with or without overwrite."""
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(DataError, match="not empty"):
        sample_data.generate(target, **TINY)
    with pytest.raises(DataError, match="did not write"):
        sample_data.generate(target, overwrite=True, **TINY)
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]  # no temp folder left


def test_failed_run_leaves_nothing(tmp_path, monkeypatch):
    """A run failing midway leaves neither the output nor a temp folder."""
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    real = sample_shapes.draw_scene
    monkeypatch.setattr(sample_shapes, "draw_scene", failing)
    with pytest.raises(RuntimeError):
        sample_data.generate(tmp_path / "out", **TINY)
    assert not list(tmp_path.iterdir())


def test_overwrite_replaces_own_folder(tmp_path):
    """overwrite=True replaces a folder this generator wrote."""
    target = tmp_path / "data"
    sample_data.generate(target, seed=1, **TINY)
    result = sample_data.generate(target, seed=2, overwrite=True, **TINY)
    marker = json.loads(pathlib.Path(result["marker"]).read_text(encoding="utf-8"))
    assert marker["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_ensure_sample_data_skips_when_present(generated, tmp_path):
    """ensure_sample_data reuses a matching folder and regenerates otherwise."""
    root = pathlib.Path(generated["root"])
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    again = sample_data.ensure_sample_data(root, SEED, **SIZES)
    assert again["generated"] is False
    assert again["datasets"]["signs"]["annotations"] == (
        generated["datasets"]["signs"]["annotations"])
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    fresh = sample_data.ensure_sample_data(tmp_path / "new", 5, **TINY)
    assert fresh["generated"] is True
    assert sample_data.ensure_sample_data(tmp_path / "new", 5, **TINY)["generated"] is False
    assert sample_data.ensure_sample_data(tmp_path / "new", 6, **TINY)["generated"] is True


def test_bad_sizes_and_cli(tmp_path, capsys):
    """Sizes must be positive; the CLI generates, then skips with --if-missing."""
    with pytest.raises(DataError, match="positive"):
        sample_data.generate(tmp_path / "x", num_train=0)
    args = ["--out", os.fspath(tmp_path / "cli"), "--train", "2", "--val", "1", "--test", "1"]
    assert sample_data.main(args + ["--if-missing"]) == 0
    assert "generated" in capsys.readouterr().out
    assert sample_data.main(args + ["--if-missing"]) == 0
    assert "already present" in capsys.readouterr().out
    with pytest.raises(DataError):
        sample_data.main(args)
