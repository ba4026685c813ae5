"""`python -m data_pipelines.inspect` on copies of small real sets with planted problems.

Clothing (image folders): an exact duplicate across train/val, a near duplicate
(resized, re-encoded), an all-black image, a heavily blurred image, a mislabelled copy and
an unreadable file. Fruits (COCO): a box outside its image, a zero-size box, a duplicate
box and an image without boxes. Each must be found, no clean file flagged, and the
`exclude.txt` written must make training's sources leave the files out.
"""
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from data_pipelines.exclude import excluded_paths, read_lines
from data_pipelines.inspect import inspect_datasets, main
from data_pipelines.inspect_catalog import build_catalog
from data_pipelines.label_issues import label_issue_rows
from data_pipelines.sources import open_source
from effdet_tf.config import check_dataset_paths, config_from_dict
from effdet_tf.errors import ConfigError, DataError
from tests.conftest import require_shared
from train.data import class_table, count_images

CLASSES = ("hat", "pants", "shoes")
PER_CLASS = {"train": 6, "val": 2}


def _pick(source_root, cls, count, skip=0):
    names = sorted(os.listdir(source_root / "train" / cls))
    return [source_root / "train" / cls / n for n in names[skip:skip + count]]


@pytest.fixture(name="clothing", scope="module")
def fixture_clothing(tmp_path_factory):
    """A planted image-folder copy of clothing: (root, {plant: relative file})."""
    source = require_shared("datasets", "clothing")
    root = tmp_path_factory.mktemp("clothing")
    for cls in CLASSES:
        files = _pick(source, cls, PER_CLASS["train"] + PER_CLASS["val"])
        for split, chosen in (("train", files[:PER_CLASS["train"]]),
                              ("val", files[PER_CLASS["train"]:])):
            os.makedirs(root / split / cls, exist_ok=True)
            for path in chosen:
                shutil.copyfile(path, root / split / cls / path.name)
    spare = {cls: _pick(source, cls, 3, skip=20) for cls in CLASSES}
    leak_of = sorted(os.listdir(root / "train" / "hat"))[0]
    near_of = sorted(os.listdir(root / "train" / "pants"))[0]
    plants = {"leak": "val/hat/leak_copy.jpg", "leak_source": f"train/hat/{leak_of}",
              "near": "train/pants/near_copy.jpg", "near_source": f"train/pants/{near_of}",
              "black": "train/shoes/black.jpg", "blurred": "train/hat/blurred.jpg",
              "mislabelled": "train/pants/mislabelled_hat.jpg",
              "unreadable": "train/shoes/broken.jpg"}
    shutil.copyfile(root / plants["leak_source"], root / plants["leak"])
    with Image.open(root / plants["near_source"]) as img:
        img.resize((img.width * 4 // 5, img.height * 4 // 5)).save(root / plants["near"],
                                                                     quality=70)
    Image.new("RGB", (192, 256)).save(root / plants["black"])
    with Image.open(spare["hat"][0]) as img:
        img.filter(ImageFilter.GaussianBlur(8)).save(root / plants["blurred"], quality=90)
    shutil.copyfile(spare["hat"][1], root / plants["mislabelled"])
    (root / plants["unreadable"]).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root, plants


def _clothing_config(root, exclude=""):
    return config_from_dict({"name": "planted", "data": {"datasets": [
        {"name": "clothing", "format": "image_folder", "root": str(root),
         "exclude": exclude}]}})


@pytest.fixture(name="clothing_report", scope="module")
def fixture_clothing_report(clothing, tmp_path_factory):
    """(out dir, issues table) of inspecting the planted clothing copy."""
    root, _ = clothing
    out = tmp_path_factory.mktemp("report") / "inspect"
    inspect_datasets(_clothing_config(root), str(out))
    return out, pd.read_csv(out / "issues.csv", keep_default_na=False)


def _flagged(issues, issue):
    return set(issues[issues["issue"] == issue]["file"])


def test_each_planted_image_problem_is_found(clothing, clothing_report):
    """Leakage, near duplicate, black, blurred and unreadable files are each reported."""
    _, plants = clothing
    _, issues = clothing_report
    assert _flagged(issues, "leakage") == {plants["leak"], plants["leak_source"]}
    assert _flagged(issues, "near_duplicate") == {plants["near"], plants["near_source"]}
    assert plants["black"] in _flagged(issues, "dark")
    assert plants["black"] in _flagged(issues, "low_information")
    assert _flagged(issues, "blank") == {plants["black"]}
    assert plants["blurred"] in _flagged(issues, "blurry")
    assert _flagged(issues, "unreadable") == {plants["unreadable"]}


def test_no_clean_file_is_flagged(clothing, clothing_report):
    """Only planted files and the originals they copy appear in issues.csv."""
    _, plants = clothing
    _, issues = clothing_report
    expected = set(plants.values()) - {plants["mislabelled"]}
    assert set(issues["file"]) == expected


def test_exclude_rule_and_the_cleaned_view(clothing, clothing_report):
    """exclude.txt leaves out the training copy of the leak, the second near duplicate by
    name, the black and the unreadable file; a config pointing at it trains without them."""
    root, plants = clothing
    out, _ = clothing_report
    exclude = out / "clothing" / "exclude.txt"
    entries = {entry for _, entry in read_lines(str(exclude))}
    assert entries == {plants["leak_source"], plants["near"], plants["black"],
                       plants["unreadable"]}
    before = open_source(_clothing_config(root).data.datasets[0], "train")
    cfg = _clothing_config(root, str(exclude))
    check_dataset_paths(cfg)
    after = open_source(cfg.data.datasets[0], "train")
    assert before.num_images - after.num_images == 4 == after.excluded
    kept = {os.path.relpath(p, root).replace(os.sep, "/") for p in after.paths}
    assert not kept & entries and plants["near_source"] in kept and plants["blurred"] in kept
    assert after.check() == []  # the unreadable file no longer stops training
    assert open_source(cfg.data.datasets[0], "val").excluded == 0
    # the statistics training uses: image counts, and the counts behind balanced weights
    assert count_images(cfg.data.datasets[0], "train") == after.num_images
    counts = dict(zip(*(class_table(cfg)["clothing"][k] for k in ("names", "train_counts"))))
    assert counts == {"hat": 7 - 1, "pants": 8 - 1, "shoes": 7 - 1}


def test_report_files(clothing_report):
    """report.md links PNGs that exist, with the config line to add."""
    out, issues = clothing_report
    text = (out / "report.md").read_text()
    for link in [part.split(")")[0] for part in text.split("](")[1:]]:
        assert (out / link).is_file(), link
    assert f"exclude: {out / 'clothing' / 'exclude.txt'}" in text
    assert "| leakage | 2 | 1 |" in text
    assert set(issues.columns) >= {"file", "split", "issue", "score", "detail"}
    assert not list(out.parent.glob(".inspect-*"))  # the staging folder is gone


def test_mislabelled_copy_is_found_from_probabilities(clothing):
    """cleanlab flags the hat filed as pants, and only it, given a model's probabilities
    that know each image's content (the run's own, in `--run`)."""
    root, plants = clothing
    cfg = _clothing_config(root)
    catalog = build_catalog(cfg.data.datasets[0], ["train"])
    source = open_source(cfg.data.datasets[0], "train")
    truth = np.array([source.class_names.index(
        "hat" if os.path.basename(p) == "mislabelled_hat.jpg" else p.split(os.sep)[-2])
        for p in source.paths])
    probs = np.full((len(truth), len(CLASSES)), 0.05)
    probs[np.arange(len(truth)), truth] = 0.9
    pred = {"probs": probs, "labels": source.labels, "mask": source.label_mask,
            "paths": source.paths}
    rows = label_issue_rows(catalog, pred, source.class_names, "classification")
    assert [(r["file"], r["given"], r["suggested"]) for r in rows] == [
        (plants["mislabelled"], "pants", "hat")]


def _fruits_copy(root):
    """Four train and two val fruits images; planted boxes in train. Returns the plants."""
    source = require_shared("datasets", "fruits")
    plants = {}
    for split, count in (("train", 4), ("val", 2)):
        data = json.loads((source / "annotations" / f"instances_{split}.json").read_text())
        images = data["images"][:count]
        ids = {img["id"] for img in images}
        anns = [a for a in data["annotations"] if a["image_id"] in ids]
        for img in images:
            os.makedirs(root / "images", exist_ok=True)
            name = img["file_name"]
            shutil.copyfile(source / "images" / name, root / "images" / name)
        if split == "train":
            first, second, third, last = images
            next_id = max(a["id"] for a in data["annotations"]) + 1
            copy = next(a for a in anns if a["image_id"] == first["id"])
            anns += [dict(copy, id=next_id, bbox=[first["width"] + 10.0, 5.0, 30.0, 30.0]),
                     dict(copy, id=next_id + 1, image_id=second["id"], bbox=[5.0, 5.0, 0.0, 9.0]),
                     dict(copy, id=next_id + 2, image_id=third["id"],
                          bbox=[b + 1.0 for b in copy["bbox"][:2]] + copy["bbox"][2:])]
            copy_box = next(a for a in anns if a["image_id"] == third["id"])
            anns[-1]["bbox"] = [copy_box["bbox"][0] + 1.0, copy_box["bbox"][1]] + \
                copy_box["bbox"][2:]
            anns[-1]["category_id"] = copy_box["category_id"]
            anns = [a for a in anns if a["image_id"] != last["id"]]
            plants = {"outside": first["file_name"], "zero": second["file_name"],
                      "duplicate": third["file_name"], "empty": last["file_name"]}
        os.makedirs(root / "annotations", exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            dict(data, images=images, annotations=anns)))
    return plants


def test_planted_box_problems(tmp_path):
    """A box outside its image, a zero-size and a duplicate box, an image without boxes:
    found; the first two images are left out, and the cleaned set passes validation."""
    root = tmp_path / "fruits"
    plants = _fruits_copy(root)
    cfg = config_from_dict({"name": "boxes", "data": {"datasets": [
        {"name": "fruits", "root": str(root)}]}})
    with pytest.raises(DataError):
        open_source(cfg.data.datasets[0], "train").check()
    out = tmp_path / "out"
    inspect_datasets(cfg, str(out), image_checks=False)
    issues = pd.read_csv(out / "issues.csv", keep_default_na=False)
    found = {issue: {f.split("/")[-1] for f in group["file"]}
             for issue, group in issues.groupby("issue")}
    assert found["box_outside"] == {plants["outside"]}
    assert found["degenerate_box"] == {plants["zero"]}
    assert found["duplicate_box"] == {plants["duplicate"]}
    assert found["no_boxes"] == {plants["empty"]}
    exclude = out / "fruits" / "exclude.txt"
    assert {e.split("/")[-1] for _, e in read_lines(str(exclude))} == {plants["outside"],
                                                                      plants["zero"]}
    cleaned = config_from_dict({"name": "boxes", "data": {"datasets": [
        {"name": "fruits", "root": str(root), "exclude": str(exclude)}]}})
    source = open_source(cleaned.data.datasets[0], "train")
    assert source.check() == [] and len(source.image_ids) == 2 and source.excluded == 2
    assert len(source.coco.getImgIds()) == 2  # evaluation's ground truth follows


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    """A missing dataset folder or exclude file is a one-line error before any work."""
    cfg = config_from_dict({"name": "x", "data": {"datasets": [
        {"name": "gone", "format": "image_folder", "root": str(tmp_path / "nowhere")}]}})
    with pytest.raises(DataError, match="folder .*nowhere does not exist"):
        inspect_datasets(cfg, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    (tmp_path / "data" / "train" / "a").mkdir(parents=True)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"name: x\ndata:\n  datasets:\n    - name: d\n      format: image_folder\n"
                        f"      root: {tmp_path / 'data'}\n      exclude: {tmp_path / 'no.txt'}\n")
    with pytest.raises(DataError, match="exclude file .*no.txt does not exist"):
        main(["--config", str(cfg_file), "--out", str(tmp_path / "out")])
    with pytest.raises(ConfigError, match="exclude file .*no.txt does not exist"):
        from effdet_tf.config import load_config  # pylint: disable=import-outside-toplevel
        check_dataset_paths(load_config(str(cfg_file)), splits=())
    with pytest.raises(ConfigError, match="'other' is not a dataset"):
        main(["--config", str(cfg_file), "--out", str(tmp_path / "out"),
              "--datasets", "other"])
    assert not (tmp_path / "out").exists()
    capsys.readouterr()


def test_exclusion_file_paths(tmp_path):
    """Entries are relative to the dataset root; comments and blank lines are ignored."""
    (tmp_path / "list.txt").write_text("# header\n\ntrain/a/x.jpg  # why\n/abs/y.png\n")
    keys = excluded_paths(str(tmp_path / "list.txt"), str(tmp_path / "root"))
    assert keys == {os.path.normpath(str(tmp_path / "root" / "train" / "a" / "x.jpg")),
                    os.path.normpath("/abs/y.png")}
    assert excluded_paths("", str(tmp_path)) == frozenset()


def test_run_folder_keeps_the_exclusion_list(clothing, clothing_report, tmp_path):
    """A new run folder records the exclude path in config.yaml and copies the list."""
    from train.run_dir import prepare_run_dir  # pylint: disable=import-outside-toplevel

    root, _ = clothing
    out, _ = clothing_report
    exclude = out / "clothing" / "exclude.txt"
    cfg = _clothing_config(root, str(exclude))
    cfg.train.run_dir = str(tmp_path / "run")
    run, resuming = prepare_run_dir(cfg)
    assert not resuming
    assert (tmp_path / "run" / "exclude_clothing.txt").read_text() == exclude.read_text()
    assert f"exclude: {exclude}" in (tmp_path / "run" / "config.yaml").read_text()
    assert run == cfg.run_path
