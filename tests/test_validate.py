"""Tests of up-front validation: every problem listed, each naming the file and the id."""
import os

import numpy as np
import pytest

from effdet_tf.errors import DataError
from data_pipelines.coco import CocoSource
from data_pipelines.validate import raise_if_problems
from tests.test_coco_source import make_dataset, write_coco, write_image


def _img(iid, name, w=40, h=30):
    return {"id": iid, "file_name": name, "width": w, "height": h}


def _errors(annotation_file, image_dir):
    """The problems of a dataset that are not warnings, as messages."""
    source = CocoSource("toy", str(annotation_file), str(image_dir))
    return [p.message for p in source.problems() if p.kind != "warning"]


def _ann(aid, iid, cat=3, bbox=(1, 1, 10, 10)):
    return {"id": aid, "image_id": iid, "category_id": cat, "bbox": list(bbox)}


def test_missing_keys_and_unreadable_json(tmp_path):
    """Missing top-level keys are each reported; unreadable json raises DataError."""
    bad = tmp_path / "a.json"
    bad.write_text('{"images": []}', encoding="utf-8")
    problems = _errors(bad, tmp_path)
    assert len(problems) == 2
    assert all(str(bad) in p for p in problems)
    assert any("'annotations'" in p for p in problems)
    assert any("'categories'" in p for p in problems)
    broken = tmp_path / "b.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="b.json: not readable as json"):
        CocoSource("x", str(broken), str(tmp_path))
    with pytest.raises(DataError, match="not found"):
        CocoSource("x", str(tmp_path / "none.json"), str(tmp_path))


def test_every_problem_listed_once(tmp_path):
    """All problems of a broken dataset come in one error, each naming file and id."""
    images_dir = tmp_path / "images"
    for name in ("ok.jpg", "dup.jpg", "wrong_size.jpg"):
        write_image(images_dir / name, 40, 30)
    (images_dir / "corrupt.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    images = [_img(1, "ok.jpg"), _img(2, "dup.jpg"), _img(2, "dup.jpg"),
              _img(3, "missing.jpg"), _img(4, "corrupt.jpg"), _img(5, "wrong_size.jpg", 50, 30)]
    anns = [_ann(10, 1), _ann(11, 1, bbox=(1, 2, 3)), _ann(12, 1, cat=99),
            _ann(13, 1, bbox=(1, 1, 0, 5)), _ann(14, 42), _ann(14, 1)]
    ann_file = write_coco(tmp_path, images, anns)
    src = CocoSource("bad", str(ann_file), str(images_dir))
    found = src.problems()
    assert [p.message for p in found if p.kind == "warning"] == [
        next(p.message for p in found if "image id 5: declared size 50x30" in p.message)]
    problems = [p.message for p in found if p.kind != "warning"]
    expected = {"duplicate image id 2": "2", "annotation id 11: bbox": "11",
                "annotation id 12 has unknown category id 99": "12",
                "annotation id 13: bbox [1, 1, 0, 5] has zero": "13",
                "annotation id 14 refers to unknown image id 42": "14",
                "duplicate annotation id 14": "14", "image id 3: file": "missing.jpg",
                "image id 4: file": "corrupt.jpg"}
    assert len(problems) == len(expected), problems
    for fragment, ident in expected.items():
        hits = [p for p in problems if fragment in p]
        assert hits, fragment
        assert str(ann_file) in hits[0] and ident in hits[0]
    with pytest.raises(DataError) as err:
        src.check("fail")
    lines = str(err.value).splitlines()
    assert lines[0] == f"{len(expected)} problems in {ann_file}"
    assert len(lines) == len(expected) + 1


def test_on_corrupt_skip_counts(tmp_path, capsys):
    """A corrupt image fails the run, or is skipped and counted with on_corrupt='skip'."""
    ann_file = make_dataset(tmp_path, 3)
    os.remove(tmp_path / "images" / "img_2.jpg")
    (tmp_path / "images" / "img_2.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    src = CocoSource("toy", str(ann_file), str(tmp_path / "images"))
    problems = _errors(ann_file, tmp_path / "images")
    assert len(problems) == 1 and "image id 2" in problems[0] and "img_2.jpg" in problems[0]
    with pytest.raises(DataError, match="1 problem in"):
        src.dataset(32, 4)
    ids = [int(ex["image_id"]) for ex in src.dataset(32, 4, on_corrupt="skip", with_meta=True)]
    assert ids == [1, 3]
    assert "skipped 1 corrupt image(s) of 3" in capsys.readouterr().out
    with pytest.raises(ValueError, match="on_corrupt"):
        src.dataset(32, 4, on_corrupt="ignore")


def test_truncated_jpeg_is_corrupt(tmp_path):
    """A truncated JPEG is found by the up-front decode."""
    ann_file = make_dataset(tmp_path, 1, size=(300, 200))
    path = tmp_path / "images" / "img_1.jpg"
    path.write_bytes(path.read_bytes()[:400])
    problems = _errors(ann_file, tmp_path / "images")
    assert len(problems) == 1 and "img_1.jpg" in problems[0] and "image id 1" in problems[0]


def test_raise_if_problems_is_quiet_when_clean(tmp_path):
    """A clean dataset has no problems; a category without id is one."""
    raise_if_problems([], "x.json")
    ann_file = make_dataset(tmp_path, 2)
    assert not _errors(ann_file, tmp_path / "images")
    write_coco(tmp_path, [_img(1, "a.jpg")], [], categories=[{"name": "no id"}], split="val")
    problems = _errors(tmp_path / "annotations" / "instances_val.json", tmp_path / "images")
    assert any("categories[0] has no integer id" in p for p in problems)


def test_box_wholly_outside_its_image_is_refused(tmp_path, capsys):
    """A box past the image edge is an error naming file, annotation id and image size;
    boxes that only overhang are clipped and counted in one warning, printed once."""
    from data_pipelines.pipeline import build_sources  # pylint: disable=import-outside-toplevel

    write_image(tmp_path / "images" / "a.jpg", 650, 400)
    ann_file = write_coco(tmp_path, [_img(1, "a.jpg", 650, 400)], [
        _ann(11, 1, bbox=(750, 10, 50, 50)),     # wholly right of the image
        _ann(12, 1, bbox=(600, 10, 100, 50)),    # overhangs the right edge
        _ann(13, 1, bbox=(-20, -5, 40, 40)),     # overhangs the top-left corner
        _ann(14, 1, bbox=(10, 10, 50, 50))])
    with pytest.raises(DataError) as err:
        CocoSource("x", str(ann_file), str(tmp_path / "images")).check()
    message = str(err.value)
    assert f"{ann_file}: annotation id 11: bbox [750, 10, 50, 50] lies wholly outside its " \
           "image (id 1, 650x400 px)" in message
    assert "annotation id 12" not in message and "annotation id 13" not in message

    ann_file = write_coco(tmp_path, [_img(1, "a.jpg", 650, 400)], [
        _ann(12, 1, bbox=(600, 10, 100, 50)), _ann(13, 1, bbox=(-20, -5, 40, 40))])

    class Config:  # pylint: disable=too-few-public-methods  # a dataset config stand-in
        name, format, heads = "x", "coco", None

        @staticmethod
        def paths(_split):
            return str(ann_file), str(tmp_path / "images")

    for _ in range(2):
        build_sources([Config()], "train")
    err_text = capsys.readouterr().err
    assert err_text.count("2 boxes overhang the image edge and will be clipped to it") == 1
    source = CocoSource("x", str(ann_file), str(tmp_path / "images"))
    boxes = source.dataset(128, 4).take(1).get_single_element()["boxes"].numpy()[:2]
    assert boxes.min() >= 0 and boxes.max() <= 128 and boxes[0, 2] == 128
