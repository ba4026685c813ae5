"""Tests of `data_pipelines.anchor_fit`: boxes in the letterboxed frame, per-class anchor
fit against hand-placed boxes, and the inspection report's lines and file."""
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from data_pipelines import anchor_fit as fit
from data_pipelines.decode import letterbox_geometry
from data_pipelines.inspect_catalog import Catalog

BOX_COLUMNS = ["image", "annotation_id", "category", "x", "y", "w", "h"]


def _catalog(images, boxes, kind="detection"):
    """A stand-in catalog from (split, width, height) images and COCO boxes."""
    frame = pd.DataFrame([{"split": s, "file": f"{i}.jpg", "path": f"/d/{i}.jpg", "width": w,
                           "height": h, "error": "" if w else "unreadable", "label": -1}
                          for i, (s, w, h) in enumerate(images)])
    table = pd.DataFrame(boxes, columns=BOX_COLUMNS)
    return Catalog("set", kind, "/d", ["square", "pole"], frame,
                   np.zeros((len(frame), 0), np.float32), table)


def _poles_and_squares():
    """Train images of 256 x 128 px (letterboxed to 128: scale 0.5, 32 px of padding at
    top and bottom): a square of 64 px (32 in the frame, an anchor's own shape) and a pole
    of 24 x 128 px (12 x 64 in the frame, 5.3:1); a val box and boxes that cannot be
    measured are left out."""
    images = [("train", 256, 128), ("train", 256, 128), ("val", 256, 128), ("train", 0, 0)]
    boxes = [
        # square: 64 x 64 at (104, 24) -> 32 x 32 at (52, 44) in the frame: centred (68, 60)
        [0, 1, 0, 104, 24, 64, 64],
        # pole: 24 x 128 at (108, 0) -> 12 x 64 at (54, 32): centred (60, 64)
        [1, 2, 1, 108, 0, 24, 128],
        [2, 3, 0, 0, 0, 64, 64],          # val: not measured
        [3, 4, 0, 0, 0, 10, 10],          # unreadable image
        [0, 5, 1, 0, 0, 0, 10],           # zero width
        [0, 6, -1, 0, 0, 10, 10],         # no category
    ]
    return _catalog(images, boxes)


def test_letterboxed_boxes_follow_the_pipeline_frame():
    frame = fit.letterboxed_boxes(_poles_and_squares(), 128)
    assert frame["category"].tolist() == [0, 1]
    np.testing.assert_allclose(frame[["x1", "y1", "x2", "y2"]].to_numpy(),
                               [[52, 44, 84, 76], [54, 32, 66, 96]])


def test_letterboxed_boxes_match_the_pipeline_image_by_image():
    """Odd image sizes (rounding of the resized side and of the padding) give the frame
    `letterbox_geometry` gives each image alone."""
    sizes = [(333, 500), (640, 427), (97, 1000), (128, 129)]
    catalog = _catalog([("train", w, h) for w, h in sizes],
                       [[i, i, 0, 10, 20, 30, 40] for i in range(len(sizes))])
    frame = fit.letterboxed_boxes(catalog, 128)
    for i, (w, h) in enumerate(sizes):
        scale, _, pad = (t.numpy() for t in letterbox_geometry(tf.constant([h, w]), 128))
        np.testing.assert_allclose(frame.loc[i, ["x1", "y1", "x2", "y2"]].to_numpy(float),
                                   [10 * scale[0] + pad[0], 20 * scale[1] + pad[1],
                                    40 * scale[0] + pad[0], 60 * scale[1] + pad[1]],
                                   rtol=1e-6)


def test_anchor_fit_per_class():
    """The square fits a default anchor; the pole fits none of the three default ratios
    at IoU 0.5 (the 2:1 anchors reach about 0.4), and a 4:1 anchor of the wide set at 0.67."""
    catalog = _poles_and_squares()
    three = fit.anchor_fit(catalog, 128)
    assert three.loc["square", "boxes"] == 1 and three.loc["all", "boxes"] == 2
    assert three.loc["square", "median_aspect"] == 1.0
    assert three.loc["pole", "median_aspect"] == pytest.approx(12 / 64)
    assert three.loc["square", "no_anchor_share"] == 0.0
    assert three.loc["square", "median_anchors"] >= 1
    assert three.loc["pole", "no_anchor_share"] == 1.0
    assert three.loc["pole", "median_best_iou"] < 0.5
    assert three.loc["all", "no_anchor_share"] == 0.5
    wide = fit.anchor_fit(catalog, 128, fit.WIDE_RATIOS)
    assert wide.loc["pole", "no_anchor_share"] == 0.0
    assert wide.loc["pole", "median_best_iou"] == pytest.approx(720 / 1072, abs=1e-4)


def test_report_lines_and_csv(tmp_path):
    """Two lines (the fit, then the wide set's) and the table; nothing for other kinds."""
    lines = fit.write_anchor_fit(_poles_and_squares(), str(tmp_path), 128)
    assert len(lines) == 2
    assert lines[0].startswith("- Anchor fit (train boxes at 128 px, aspect ratios 1, 2, 0.5)"
                               ": 50% of boxes have no anchor at IoU >= 0.5 (worst `pole`: 100%)")
    assert "`model.anchor_aspect_ratios: [1, 2, 0.5, 4, 0.25]`: 0% of boxes, `pole` 0%" \
        in lines[1]
    table = pd.read_csv(tmp_path / "anchor_fit.csv", index_col=0)
    assert table.index.tolist() == ["square", "pole", "all"]
    # Already the wide set: one line, no hint.
    assert len(fit.anchor_fit_lines(_poles_and_squares(), 128, fit.WIDE_RATIOS)) == 1
    # Other kinds and datasets without training boxes: nothing, and no file.
    other = tmp_path / "other"
    assert not fit.write_anchor_fit(_catalog([("train", 64, 64)], [], "classification"),
                                    str(other), 128)
    assert not fit.write_anchor_fit(_catalog([("val", 64, 64)], [[0, 1, 0, 0, 0, 9, 9]]),
                                    str(other), 128)
    assert not other.exists()
