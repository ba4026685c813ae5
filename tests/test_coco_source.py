"""Tests of data_pipelines.coco: class mapping, box transforms, decoding, real datasets."""
import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.conftest import require_shared
from data_pipelines.coco import CocoSource
from data_pipelines.decode import PAD_VALUE, letterbox_geometry, transform_boxes, unletterbox
from effdet_tf.errors import DataError

CATS = [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}, {"id": 10, "name": "ten"}]


def write_image(path: pathlib.Path, width: int, height: int, color=(200, 30, 30),
                fmt: str = "JPEG", mode: str = "RGB", exif=None) -> None:
    """Writes a solid image (quality 95 for JPEG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (width, height), color).convert(mode)
    kwargs = {"quality": 95} if fmt == "JPEG" else {}
    if exif is not None:
        kwargs["exif"] = exif
    img.save(path, fmt, **kwargs)


def write_coco(root: pathlib.Path, images, annotations, categories=None,
               split: str = "train") -> pathlib.Path:
    """Writes `root/annotations/instances_{split}.json`; returns its path."""
    ann_dir = root / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    path = ann_dir / f"instances_{split}.json"
    data = {"images": images, "annotations": annotations,
            "categories": CATS if categories is None else categories}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def make_dataset(root: pathlib.Path, num_images: int = 4, size=(80, 60), first_id: int = 1,
                 split: str = "train") -> pathlib.Path:
    """A small valid dataset: image k has k % 3 + 1 boxes; returns the json path."""
    images, anns = [], []
    for k in range(num_images):
        iid = first_id + k
        name = f"img_{iid}.jpg"
        write_image(root / "images" / name, *size, color=(20 * k % 255, 100, 150))
        images.append({"id": iid, "file_name": name, "width": size[0], "height": size[1]})
        for j in range(k % 3 + 1):
            anns.append({"id": 100 * iid + j, "image_id": iid, "category_id": CATS[j]["id"],
                         "bbox": [5 + 3 * j, 6, 20, 15 + j], "iscrowd": 0})
    return write_coco(root, images, anns, split=split)


def test_class_names_of_a_head_reorder_categories_by_name(tmp_path):
    """A dataset training a shared head indexes its boxes by the head's class list."""
    write_image(tmp_path / "images" / "a.jpg", 200, 100)
    anns = [{"id": 1, "image_id": 1, "category_id": 10, "bbox": [20, 10, 40, 30]},
            {"id": 3, "image_id": 1, "category_id": 3, "bbox": [100, 50, 100, 50]}]
    ann = write_coco(tmp_path, [{"id": 1, "file_name": "a.jpg", "width": 200, "height": 100}],
                     anns)
    src = CocoSource("toy", str(ann), str(tmp_path / "images"),
                     class_names=["ten", "extra", "three", "seven"])
    assert src.class_names == ["ten", "extra", "three", "seven"]
    assert src.category_ids == [10, -1, 3, 7]  # "extra": no such category here
    ex = first(src.dataset(64, 4))
    assert list(ex["classes"][:2]) == [0, 2]
    with pytest.raises(DataError, match="category 'seven' is not a class of the head"):
        CocoSource("toy", str(ann), str(tmp_path / "images"), class_names=["ten", "three"])


@pytest.mark.parametrize("orig_hw", [(100, 200), (300, 120), (64, 64)])
def test_unletterbox_inverts_the_letterbox(orig_hw):
    """Original boxes -> model frame (as the pipeline maps them) -> back: the same boxes."""
    boxes = np.array([[10, 5, 60, 40], [0, 0, orig_hw[1], orig_hw[0]]], np.float32)
    scale_xy, _, pad_xy = letterbox_geometry(tf.constant(orig_hw), 64)
    framed = transform_boxes(tf.constant(boxes), scale_xy, pad_xy)
    back = unletterbox(framed, scale_xy, pad_xy, orig_hw).numpy()
    np.testing.assert_allclose(back, boxes, atol=1e-3)
    wide = unletterbox(tf.constant([[-5.0, -5.0, 70.0, 70.0]]), scale_xy[0], pad_xy, orig_hw)
    np.testing.assert_allclose(wide.numpy()[0], [0, 0, orig_hw[1], orig_hw[0]], atol=1e-3)


def first(ds):
    """The first element of a dataset as numpy."""
    return {k: v.numpy() for k, v in next(iter(ds)).items()}


def test_class_mapping_crowd_and_letterbox(tmp_path):
    """Category ids map in ascending order, crowd boxes drop, xywh becomes letterboxed xyxy."""
    write_image(tmp_path / "images" / "a.jpg", 200, 100)
    anns = [{"id": 1, "image_id": 1, "category_id": 10, "bbox": [20, 10, 40, 30]},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [0, 0, 200, 100], "iscrowd": 1},
            {"id": 3, "image_id": 1, "category_id": 3, "bbox": [100, 50, 100, 50]}]
    ann = write_coco(tmp_path, [{"id": 1, "file_name": "a.jpg", "width": 200, "height": 100}],
                     anns)
    src = CocoSource("toy", str(ann), str(tmp_path / "images"), dataset_id=2)
    assert src.class_names == ["three", "seven", "ten"]
    assert src.category_ids == [3, 7, 10]
    assert not src.problems()
    ex = first(src.dataset(64, 4, with_meta=True))
    assert ex["images"].shape == (64, 64, 3) and ex["images"].dtype == np.uint8
    assert ex["dataset_id"] == 2 and ex["image_id"] == 1
    # 200x100 -> 64x32, centred: pad y = 16.
    np.testing.assert_allclose(ex["scale"], 0.32, rtol=1e-6)
    np.testing.assert_allclose(ex["pad"], [0, 16])
    np.testing.assert_array_equal(ex["orig_size"], [100, 200])
    np.testing.assert_allclose(ex["boxes"][0], [6.4, 19.2, 19.2, 28.8], atol=1e-4)
    np.testing.assert_allclose(ex["boxes"][1], [32, 32, 64, 48], atol=1e-4)
    assert ex["classes"].tolist() == [2, 0, -1, -1]
    assert (ex["boxes"][2:] == -1).all()
    assert (ex["images"][:16] == PAD_VALUE).all() and (ex["images"][48:] == PAD_VALUE).all()
    assert abs(int(ex["images"][32, 32, 0]) - 200) < 10


def test_max_boxes_keeps_largest_and_empty_image(tmp_path):
    """Extra boxes: the largest are kept with a warning; a box-less image stays."""
    for name in ("a.jpg", "b.jpg"):
        write_image(tmp_path / "images" / name, 100, 100)
    anns = [{"id": k, "image_id": 1, "category_id": 3, "bbox": [0, 0, 10 + k, 10 + k]}
            for k in range(5)]
    ann = write_coco(tmp_path, [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100},
                                {"id": 2, "file_name": "b.jpg", "width": 100, "height": 100}],
                     anns)
    src = CocoSource("toy", str(ann), str(tmp_path / "images"))
    with pytest.warns(UserWarning, match="more than max_boxes=2"):
        ds = src.dataset(100, 2)
    a, b = [{k: v.numpy() for k, v in ex.items()} for ex in ds]
    np.testing.assert_allclose(a["boxes"], [[0, 0, 13, 13], [0, 0, 14, 14]])
    assert (b["boxes"] == -1).all() and (b["classes"] == -1).all()


@pytest.mark.parametrize("kind", ["grey", "rgba_png", "png_named_jpg", "palette_png",
                                  "big_jpeg"])
def test_decodes_any_mode_to_rgb(tmp_path, kind):
    """Greyscale, RGBA, palette, PNG named .jpg and big JPEGs decode to the right RGB."""
    colour = (40, 160, 220)
    size = (60, 40)
    path = tmp_path / "images" / "x.jpg"
    if kind == "grey":
        write_image(path, *size, color=(120, 120, 120), mode="L")
        colour = (120, 120, 120)
    elif kind == "rgba_png":
        path = path.with_suffix(".png")
        write_image(path, *size, color=colour, fmt="PNG", mode="RGBA")
    elif kind == "png_named_jpg":
        write_image(path, *size, color=colour, fmt="PNG")
    elif kind == "palette_png":
        path = path.with_suffix(".png")
        write_image(path, *size, color=colour, fmt="PNG", mode="P")
    else:
        size = (1200, 800)
        write_image(path, *size, color=colour)
    w, h = size
    ann = write_coco(tmp_path, [{"id": 5, "file_name": path.name, "width": w, "height": h}],
                     [{"id": 1, "image_id": 5, "category_id": 3,
                       "bbox": [w / 4, h / 4, w / 2, h / 2]}])
    src = CocoSource("toy", str(ann), str(tmp_path / "images"))
    assert not src.problems()
    ex = first(src.dataset(60, 1, with_meta=True))
    # Letterbox of a 3:2 image into 60x60: 60x40 content, 10 px of padding above.
    np.testing.assert_allclose(ex["boxes"][0], [15, 20, 45, 40], atol=1e-3)
    with Image.open(path) as img:  # PIL's RGB conversion (palette colours are quantised)
        expected = img.convert("RGB").getpixel((w // 2, h // 2))
    np.testing.assert_allclose(ex["images"][30, 30], expected, atol=3)
    np.testing.assert_allclose(expected, colour, atol=60)
    assert (ex["images"][:10] == PAD_VALUE).all()


def test_exif_orientation_6_is_applied(tmp_path):
    """An EXIF-rotated JPEG is turned upright and its boxes land on the right pixels."""
    # Stored 40 wide x 20 high: left half red, right half blue. Orientation 6 shows it
    # rotated 90 degrees clockwise: 20 wide x 40 high, red on top, blue below.
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "images").mkdir()
    img.save(tmp_path / "images" / "r.jpg", quality=95, exif=exif)
    ann = write_coco(tmp_path, [{"id": 1, "file_name": "r.jpg", "width": 20, "height": 40}],
                     [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 20, 20]}])
    src = CocoSource("toy", str(ann), str(tmp_path / "images"))
    assert not src.problems()
    ex = first(src.dataset(40, 1, with_meta=True))
    np.testing.assert_array_equal(ex["orig_size"], [40, 20])
    np.testing.assert_allclose(ex["boxes"][0], [10, 0, 30, 20])
    np.testing.assert_allclose(ex["images"][5, 20], [255, 0, 0], atol=40)
    np.testing.assert_allclose(ex["images"][35, 20], [0, 0, 255], atol=40)
    assert (ex["images"][:, :10] == PAD_VALUE).all()


def test_shuffle_is_seeded(tmp_path):
    """The same seed gives the same order; every image comes once per epoch."""
    src = CocoSource("toy", str(make_dataset(tmp_path, 6)), str(tmp_path / "images"))

    def ids(seed):
        ds = src.dataset(32, 3, shuffle=True, seed=seed, with_meta=True)
        return [int(ex["image_id"]) for ex in ds]

    assert ids(1) == ids(1)
    assert sorted(ids(1)) == list(range(1, 7))


@pytest.mark.real_data
@pytest.mark.parametrize("name", ["fruits", "household"])
def test_real_dataset_loads_and_maps_back(name):
    """Real datasets validate clean, batch right, and boxes map back to the json."""
    root = require_shared("datasets", name)
    ann = root / "annotations" / "instances_val.json"
    src = CocoSource(name, str(ann), str(root / "images"))
    assert not src.problems()
    assert len(src.class_names) == 3
    ds = src.dataset(512, 100, with_meta=True).batch(16)
    batch = {k: v.numpy() for k, v in next(iter(ds)).items()}
    assert batch["images"].shape == (16, 512, 512, 3) and batch["images"].dtype == np.uint8
    assert batch["boxes"].shape == (16, 100, 4) and batch["boxes"].dtype == np.float32
    assert batch["classes"].shape == (16, 100) and batch["classes"].dtype == np.int32
    assert batch["dataset_id"].dtype == np.int32 and batch["image_id"].dtype == np.int64
    valid = batch["classes"] >= 0
    assert valid.any()
    assert (batch["boxes"][valid] >= 0).all() and (batch["boxes"][valid] <= 512).all()
    data = json.loads(ann.read_text(encoding="utf-8"))
    for i, image_id in enumerate(batch["image_id"]):
        want = sorted([a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                       a["bbox"][1] + a["bbox"][3]]
                      for a in data["annotations"] if a["image_id"] == image_id)
        rows = batch["boxes"][i][valid[i]]
        pad = np.tile(batch["pad"][i], 2)
        got = sorted(((rows - pad) / batch["scale"][i]).tolist())
        np.testing.assert_allclose(got, want, atol=0.05, rtol=1e-4)
