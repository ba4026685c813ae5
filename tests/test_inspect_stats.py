"""Tests of the dataset-inspection analysis: `data_pipelines.inspect_stats` (numbers,
checked against hand-computed values) and `data_pipelines.inspect_plots` (figures and tables
written for each kind of dataset, including degenerate ones)."""
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_pipelines import inspect_plots as plots
from data_pipelines import inspect_stats as stats
from data_pipelines.inspect_catalog import Catalog

NAN = math.nan
BOX_COLUMNS = ["image", "annotation_id", "category", "x", "y", "w", "h"]


def _images(rows):
    """The images table from (split, width, height, error, label) rows."""
    return pd.DataFrame([{"split": split, "file": f"{split}/img_{i}.jpg",
                          "path": f"/data/{split}/img_{i}.jpg", "width": w, "height": h,
                          "error": error, "label": label}
                         for i, (split, w, h, error, label) in enumerate(rows)],
                        columns=["split", "file", "path", "width", "height", "error", "label"])


def _catalog(kind, class_names, rows, tags=None, boxes=None):
    """A stand-in catalog; tags and boxes default to the empty values of other kinds."""
    images = _images(rows)
    tags = np.zeros((len(images), 0), np.float32) if tags is None else tags
    boxes = pd.DataFrame(boxes or [], columns=BOX_COLUMNS)
    return Catalog(f"{kind}_set", kind, "/data", list(class_names), images,
                          np.asarray(tags, np.float32), boxes)


def classification():
    """3 classes; train has an unknown label and an unreadable image; no bird in train."""
    return _catalog("classification", ["cat", "dog", "bird"], [
        ("train", 640, 480, "", 0), ("train", 640, 480, "", 0), ("train", 480, 640, "", 1),
        ("train", 500, 500, "", -1), ("train", 0, 0, "cannot identify image", 0),
        ("val", 800, 600, "", 1), ("val", 800, 600, "", 2), ("test", 300, 300, "", 2)])


MULTILABEL_TAGS = [[1, 1, 0, NAN], [1, 0, NAN, NAN], [1, 1, 1, 0], [0, NAN, 1, 1],
                   [NAN, 1, 0, 0], [1, 0, 0, NAN]]


def multilabel():
    """4 tags over 6 images (4 train, 1 val, 1 test) with unknown (NaN) values."""
    splits = ["train"] * 4 + ["val", "test"]
    return _catalog("multilabel", ["a", "b", "c", "d"],
                    [(s, 120 + 10 * i, 100, "", -1) for i, s in enumerate(splits)],
                    tags=MULTILABEL_TAGS)


def detection():
    """2 classes; image 2 has no box, box 4 is malformed, box 5 has category -1, and box 7
    lies on an unreadable test image."""
    return _catalog("detection", ["car", "person"], [
        ("train", 100, 50, "", -1), ("train", 200, 200, "", -1), ("train", 100, 100, "", -1),
        ("val", 400, 300, "", -1), ("test", 0, 0, "truncated file", -1)], boxes=[
            (0, 1, 0, 0.0, 0.0, 50.0, 25.0), (0, 2, 1, 5.0, 5.0, 10.0, 20.0),
            (1, 3, 0, 0.0, 0.0, 100.0, 100.0), (1, 4, 0, NAN, 0.0, 10.0, 10.0),
            (1, 5, -1, 0.0, 0.0, 10.0, 10.0), (3, 6, 1, 0.0, 0.0, 40.0, 30.0),
            (4, 7, 0, 0.0, 0.0, 10.0, 10.0)])


def _expected(index_name, rows):
    """An int64 split_counts table from {row name: [train, val, test]}."""
    table = pd.DataFrame([values + [sum(values)] for values in rows.values()],
                         index=pd.Index(list(rows), name=index_name),
                         columns=["train", "val", "test", "total"], dtype=np.int64)
    return table


def test_split_counts_classification():
    """Images per class; the unknown label and the unreadable image count as drawn."""
    expected = _expected("class", {"cat": [3, 0, 0], "dog": [1, 1, 0], "bird": [0, 1, 1],
                                   "all images": [5, 2, 1]})
    pd.testing.assert_frame_equal(stats.split_counts(classification()), expected)


def test_split_counts_multilabel_and_detection():
    """Known positives per tag; usable boxes per class (not malformed, not category -1)."""
    pd.testing.assert_frame_equal(stats.split_counts(multilabel()), _expected("tag", {
        "a": [3, 0, 1], "b": [2, 1, 0], "c": [2, 0, 0], "d": [1, 0, 0],
        "all images": [4, 1, 1]}))
    pd.testing.assert_frame_equal(stats.split_counts(detection()), _expected("class", {
        "car": [2, 0, 1], "person": [1, 1, 0], "all images": [3, 1, 1]}))


def test_split_counts_keeps_present_splits_in_order():
    """A split without images has no column; the others keep the train/val/test order."""
    catalog = _catalog("classification", ["x", "y"], [("test", 10, 10, "", 1),
                                                      ("train", 10, 10, "", 0)])
    assert list(stats.split_counts(catalog).columns) == ["train", "test", "total"]


def test_imbalance():
    """Most/least class of train; inf when a class is absent; the first split without train."""
    assert stats.imbalance(classification()) == {
        "split": "train", "most": ("cat", 3), "least": ("bird", 0), "ratio": math.inf}
    assert stats.imbalance(multilabel()) == {
        "split": "train", "most": ("a", 3), "least": ("d", 1), "ratio": 3.0}
    assert stats.imbalance(detection()) == {
        "split": "train", "most": ("car", 2), "least": ("person", 1), "ratio": 2.0}
    catalog = classification()
    catalog.images = catalog.images[catalog.images["split"] != "train"].reset_index(drop=True)
    assert stats.imbalance(catalog) == {
        "split": "val", "most": ("dog", 1), "least": ("cat", 0), "ratio": math.inf}


def test_size_summary():
    """Sizes over readable images; the unreadable one only counts in "unreadable"."""
    table = stats.size_summary(classification())
    assert list(table.index) == ["train", "val", "test"]
    train = table.loc["train"]
    assert (train["images"], train["unreadable"]) == (5, 1)
    assert (train["median_width"], train["min_width"], train["max_width"]) == (570, 480, 640)
    assert (train["median_height"], train["min_height"], train["max_height"]) == (490, 480, 640)
    assert train["median_aspect"] == pytest.approx((4 / 3 + 1.0) / 2)
    assert (train["portrait"], train["landscape"], train["square"]) == (0.25, 0.5, 0.25)
    assert table.loc["test", "square"] == 1.0


def test_tag_frequency_and_cooccurrence():
    """Known values, positives, prevalence and unknown share; co-occurrence counts and
    P(column | row)."""
    freq = stats.tag_frequency(multilabel())
    assert list(freq.index) == ["a", "b", "c", "d"]
    assert freq["known"].tolist() == [5, 5, 5, 3]
    assert freq["positives"].tolist() == [4, 3, 2, 1]
    np.testing.assert_allclose(freq["prevalence"], [0.8, 0.6, 0.4, 1 / 3])
    np.testing.assert_allclose(freq["unknown_share"], [1 / 6, 1 / 6, 1 / 6, 0.5])
    counts = stats.cooccurrence(multilabel())
    np.testing.assert_array_equal(counts, [[4, 2, 1, 0], [2, 3, 1, 0], [1, 1, 2, 1],
                                           [0, 0, 1, 1]])
    np.testing.assert_allclose(stats.cooccurrence(multilabel(), normalize=True), [
        [1, 0.5, 0.25, 0], [2 / 3, 1, 1 / 3, 0], [0.5, 0.5, 1, 0.5], [0, 0, 1, 1]])


def test_boxes_per_image_and_shapes():
    """Usable boxes per readable image (0 for image 2); per class size and aspect medians."""
    np.testing.assert_array_equal(stats.boxes_per_image(detection()), [2, 1, 0, 1])
    shapes = stats.box_shapes(detection())
    assert shapes["boxes"].tolist() == [3, 2]
    np.testing.assert_allclose(shapes["median_rel_size"], [0.5, 0.15])
    np.testing.assert_allclose(shapes["median_aspect"], [1.5, (0.5 + 4 / 3) / 2])
    assert stats.uncounted(detection()) == {"malformed boxes": 1,
                                            "boxes of another category": 1}


@pytest.mark.parametrize("make, expected", [
    (classification, ["- Images: 8 (train 5, val 2, test 1)", "- Unreadable images: 1 (12.5%)",
                      "most `cat` (3 images), least `bird` (0 images; no example)",
                      "- Images without a known label: 1 (12.5%)"]),
    (multilabel, ["- Unreadable images: none", "highest `a` (80.0%), lowest `d` (33.3%)",
                  "- Unknown tag values: 25.0% of all image-tag values",
                  "least `d` (1 image; ratio 3.0)"]),
    (detection, ["- Images without boxes: 1 of 4 readable (25.0%)",
                 "- Boxes per image: median 1, max 2",
                 "most `car` (2 boxes), least `person` (1 box; ratio 2.0)",
                 "- Not counted: malformed boxes (1), boxes of another category (1)"]),
])
def test_summary_lines(make, expected):
    """3 to 8 bullet lines holding the key numbers of each kind."""
    lines = stats.summary_lines(make())
    assert 3 <= len(lines) <= 8
    assert all(line.startswith("- ") for line in lines)
    text = "\n".join(lines)
    for part in expected:
        assert part in text


@pytest.mark.parametrize("make, extra", [(classification, None), (multilabel, "tags.png"),
                                         (detection, "boxes.png")])
def test_write_analysis_writes_figures_and_tables(tmp_path, make, extra):
    """The PNGs that apply to the kind (each a real image over 10 KB) and both CSVs."""
    catalog = make()
    result = plots.write_analysis(catalog, tmp_path / "out")
    names = ["counts.png", "sizes.png"] + ([extra] if extra else [])
    assert result["pngs"] == [str(tmp_path / "out" / name) for name in names]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        names + ["counts.csv", "sizes.csv"])
    for png in result["pngs"]:
        assert (tmp_path / "out" / png).stat().st_size > 10_000
        with Image.open(png) as image:
            assert image.format == "PNG" and min(image.size) > 300
    read = pd.read_csv(tmp_path / "out" / "counts.csv", index_col=0)
    pd.testing.assert_frame_equal(read, result["counts"], check_index_type=False,
                                  check_names=False)
    assert pd.read_csv(tmp_path / "out" / "sizes.csv", index_col=0)["images"].tolist() == (
        stats.size_summary(catalog)["images"].tolist())
    assert result["lines"] == stats.summary_lines(catalog)
    assert result["imbalance"] == stats.imbalance(catalog)


def _unreadable(catalog):
    """The catalog with every image unreadable."""
    catalog.images = catalog.images.assign(width=0, height=0, error="broken")
    return catalog


def _no_boxes():
    """Detection with every box removed."""
    catalog = detection()
    catalog.boxes = catalog.boxes.iloc[:0]
    return catalog


def _unknown_tags():
    """Multilabel with every tag value unknown."""
    catalog = multilabel()
    catalog.tags = np.full(catalog.tags.shape, np.nan, np.float32)
    return catalog


@pytest.mark.parametrize("make", [lambda: _unreadable(classification()),
                                  lambda: _unreadable(detection()),
                                  lambda: _unreadable(multilabel()), _no_boxes, _unknown_tags,
                                  lambda: _catalog("detection", [], [])])
def test_degenerate_catalogs_do_not_raise(tmp_path, make):
    """No readable image, no box, no known tag, no image at all: every figure and line is
    still written."""
    result = plots.write_analysis(make(), tmp_path)
    assert len(result["pngs"]) in (2, 3)
    assert all((tmp_path / png).stat().st_size > 0 for png in result["pngs"])
    assert 3 <= len(result["lines"]) <= 8


def test_degenerate_numbers():
    """The numbers of the degenerate catalogs: NaN sizes, no boxes, no prevalence."""
    sizes = stats.size_summary(_unreadable(classification()))
    assert sizes["unreadable"].tolist() == [5, 2, 1] and sizes["median_width"].isna().all()
    assert stats.boxes_per_image(_unreadable(detection())).size == 0
    np.testing.assert_array_equal(stats.boxes_per_image(_no_boxes()), [0, 0, 0, 0])
    assert stats.box_shapes(_no_boxes())["boxes"].tolist() == [0, 0]
    assert stats.box_shapes(_unreadable(detection()))["median_rel_size"].isna().all()
    freq = stats.tag_frequency(_unknown_tags())
    assert freq["known"].tolist() == [0] * 4 and freq["prevalence"].isna().all()
    assert not stats.cooccurrence(_unknown_tags(), normalize=True).any()
    assert math.isnan(stats.imbalance(_unknown_tags())["ratio"])
    assert "- Unknown tag values: 100.0% of all image-tag values; images without a known " \
        "tag: 6" in stats.summary_lines(_unknown_tags())
    assert "Median image size: no readable image" in "\n".join(
        stats.summary_lines(_unreadable(multilabel())))


def test_many_images_use_a_2d_histogram(tmp_path):
    """Above the scatter limit the size panel is a 2-D histogram; it still renders."""
    rng = np.random.default_rng(0)
    rows = [("train", int(w), int(h), "", int(c)) for w, h, c in zip(
        rng.integers(100, 900, 2500), rng.integers(100, 900, 2500), rng.integers(0, 2, 2500))]
    path = plots.plot_sizes(_catalog("classification", ["x", "y"], rows), tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 10_000 and path.endswith("s.png")
