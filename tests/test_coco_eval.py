"""Tests of the COCO evaluation library (train.coco_eval)."""
import json
import pathlib

import pytest

from effdet_tf.errors import DataError
from train import coco_eval

NAMES = ["cat", "dog", "bird"]
IDS = [1, 2, 3]  # "bird" has no ground truth
NUM_IMAGES = 10


def _ground_truth():
    """10 images of 200x200, each with one cat and one dog box (a small cat on even ones)."""
    images, anns = [], []
    for i in range(1, NUM_IMAGES + 1):
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 200, "height": 200})
        boxes = [(1, [10.0 + i, 20.0, 50.0, 40.0]), (2, [100.0, 90.0 + i, 60.0, 80.0])]
        if i % 2 == 0:
            boxes.append((1, [150.0, 10.0, 20.0, 20.0]))
        for cat, box in boxes:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": box,
                         "area": box[2] * box[3], "iscrowd": 0})
    cats = [{"id": c, "name": n} for c, n in zip(IDS, NAMES)]
    return coco_eval.coco_from_dict({"images": images, "annotations": anns, "categories": cats})


@pytest.fixture(name="gt", scope="module")
def fixture_gt():
    """The shared ground truth."""
    return _ground_truth()


def _as_detections(gt, image_ids=None, shift=0.0):
    """Ground-truth boxes as detections, x shifted by `shift` times the width."""
    dets = []
    for ann in gt.anns.values():
        if image_ids is None or ann["image_id"] in image_ids:
            x, y, w, h = ann["bbox"]
            dets.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                         "bbox": [x + shift * w, y, w, h], "score": 0.9})
    return dets


def _evaluate(gt, dets, **kwargs):
    return coco_eval.evaluate_detections(gt, dets, class_names=NAMES, category_ids=IDS,
                                         **kwargs)


def test_ground_truth_as_detections_is_perfect(gt, tmp_path):
    """Ground truth scored against itself gives AP 1; files are written."""
    result = _evaluate(gt, _as_detections(gt), out_dir=tmp_path, prefix="val_")
    for key in ("AP", "AP50", "AP75", "APs", "APm", "AR10", "AR100"):
        assert result[key] == pytest.approx(1.0), key
    assert result["APl"] == -1.0  # no large box: undefined, as COCO reports it
    assert result["per_class_AP"] == {"cat": pytest.approx(1.0), "dog": pytest.approx(1.0),
                                      "bird": -1.0}
    assert set(result["per_class_AP50"]) == set(NAMES)
    assert result["num_images"] == NUM_IMAGES
    assert result["num_detections"] == result["num_gt_boxes"] == len(gt.anns)
    assert len(result["summary"].splitlines()) == 12
    counts = result["confusion_matrix"]["counts"]
    assert counts == [[15, 0, 0, 0], [0, 10, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert result["confusion_matrix"]["labels"] == NAMES + ["background"]
    for name in ("val_pr_curve.png", "val_confusion_matrix.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = json.loads((tmp_path / "val_metrics.json").read_text(encoding="utf-8"))
    assert written["AP"] == result["AP"] and written["per_class_AP"]["dog"] == 1.0
    assert pathlib.Path(result["files"]["metrics"]) == tmp_path / "val_metrics.json"


def test_shifted_boxes_lower_ap(gt):
    """Boxes shifted to IoU 0.67 keep AP50 but lose AP75 and AP."""
    result = _evaluate(gt, _as_detections(gt, shift=0.2))  # IoU 0.8 / 1.2 = 0.67
    assert result["AP50"] == pytest.approx(1.0)
    assert result["AP75"] == pytest.approx(0.0)
    assert 0.0 < result["AP"] < 0.5


def test_empty_detections_score_zero_on_every_image(gt, tmp_path):
    """No detections at all: zeros, every image counted, no crash."""
    result = _evaluate(gt, [], out_dir=tmp_path)
    assert result["AP"] == 0.0 and result["AP50"] == 0.0 and result["AR100"] == 0.0
    assert result["num_images"] == NUM_IMAGES and result["num_detections"] == 0
    assert result["per_class_AP"]["cat"] == 0.0
    assert result["confusion_matrix"]["counts"][0][3] == 15  # every cat missed
    assert (tmp_path / "pr_curve.png").is_file() and (tmp_path / "metrics.json").is_file()


def test_images_without_detections_still_count(gt):
    """Images without detections count as misses."""
    half = set(range(1, NUM_IMAGES // 2 + 1))
    result = _evaluate(gt, _as_detections(gt, image_ids=half))
    # Perfect on images 1-5 only: recall 5/10 of the dogs and 7/15 of the cats.
    assert result["AR100"] == pytest.approx((0.5 + 7 / 15) / 2, abs=0.01)
    assert result["per_class_AP"]["dog"] == pytest.approx(0.5, abs=0.02)
    assert result["num_images"] == NUM_IMAGES


def test_confusion_matrix_counts(gt):
    """Wrong class, false positive, low score and misses land in the right cells."""
    dets = [
        {"image_id": 1, "category_id": 2, "bbox": [11.0, 20.0, 50.0, 40.0], "score": 0.8},
        {"image_id": 1, "category_id": 1, "bbox": [0.0, 150.0, 30.0, 30.0], "score": 0.7},
        {"image_id": 1, "category_id": 2, "bbox": [100.0, 91.0, 60.0, 80.0], "score": 0.1},
    ]
    counts = coco_eval.confusion_matrix(gt, dets, category_ids=IDS)
    assert counts[0, 1] == 1  # cat called dog
    assert counts[3, 0] == 1  # cat on background
    assert counts[1, 3] == NUM_IMAGES  # low-score dog ignored: every dog missed
    assert counts.sum() == 2 + 15 - 1 + NUM_IMAGES


@pytest.mark.parametrize("bad, message", [
    ({"image_id": 99, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 1.0}, "image_id"),
    ({"image_id": 1, "category_id": 7, "bbox": [0, 0, 5, 5], "score": 1.0}, "category_id"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, float("nan"), 5], "score": 1.0},
     "finite"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]}, "lacks"),
])
def test_bad_detections_raise(gt, bad, message):
    """Malformed detections raise DataError naming the problem."""
    with pytest.raises(DataError, match=message):
        _evaluate(gt, [bad])
