"""Tests of the image-level label sources: image folders and CSV/Parquet tables."""
import pathlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_pipelines.decode import PAD_VALUE
from data_pipelines.image_folder import ImageFolderSource
from data_pipelines.table_source import TableSource
from effdet_tf.errors import DataError

RED, GREEN, BLUE, GREY = (220, 30, 30), (30, 200, 40), (40, 50, 210), (128, 128, 128)
FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}
EXAMPLE_KEYS = {"images", "boxes", "classes", "dataset_id"}
META_KEYS = {"image_id", "scale", "pad", "orig_size"}


def write_image(path: pathlib.Path, color=GREY) -> None:
    """Writes a flat 20x16 image, in the format of its extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = FORMATS[path.suffix.lower()]
    Image.new("RGB", (20, 16), color).save(path, fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def write_table(folder: pathlib.Path, rows, fmt: str, name: str = "data") -> pathlib.Path:
    """Writes `rows` (a dict of columns) as `folder/name.csv` or `.parquet`."""
    path = folder / f"{name}.{fmt}"
    table = pd.DataFrame(rows)
    if fmt == "csv":
        table.to_csv(path, index=False)
    else:
        table.to_parquet(path, index=False)
    return path


def examples(ds):
    """Every element of a dataset as numpy."""
    return [{k: v.numpy() for k, v in ex.items()} for ex in ds]


def error_of(*args, **kwargs) -> str:
    """The message of the `DataError` that building a `TableSource` raises."""
    with pytest.raises(DataError) as info:
        TableSource(*args, **kwargs)
    return str(info.value)


def check_letterboxed(image: np.ndarray, color) -> None:
    """A 20x16 flat image letterboxed into 40x40: 4 padding rows above and below."""
    assert image.shape == (40, 40, 3) and image.dtype == np.uint8
    assert (image[:4] == PAD_VALUE).all() and (image[36:] == PAD_VALUE).all()
    np.testing.assert_allclose(image[20, 20], color, atol=12)


@pytest.fixture(name="folder_root")
def fixture_folder_root(tmp_path):
    """`root/train/{cat,dog}/...` with files that must be ignored; returns root."""
    split = tmp_path / "clothes" / "train"
    write_image(split / "cat" / "b.jpg", RED)
    write_image(split / "cat" / "a.PNG", GREEN)
    write_image(split / "dog" / "c.jpeg", BLUE)
    write_image(split / "dog" / ".hidden.jpg")
    write_image(split / "dog" / "deeper" / "x.jpg")
    write_image(split / ".cache" / "y.jpg")
    (split / "dog" / "notes.txt").write_text("not an image", encoding="utf-8")
    (split / "README.md").write_text("not a class", encoding="utf-8")
    return tmp_path / "clothes"


def test_folder_classes_ids_and_examples(folder_root):
    """Sorted class folders, sorted files, one-hot labels and letterboxed box-less examples."""
    src = ImageFolderSource("clothes", str(folder_root), "train", head="category", dataset_id=3)
    assert src.kind == "classification" and src.origin == str(folder_root / "train")
    assert src.class_names == ["cat", "dog"]
    assert src.ids == ["train/cat/a.PNG", "train/cat/b.jpg", "train/dog/c.jpeg"]
    assert src.where == src.paths and src.image_ids == [0, 1, 2]
    np.testing.assert_array_equal(src.labels, [[1, 0], [1, 0], [0, 1]])
    assert src.labels.dtype == np.float32 and (src.label_mask == 1).all()
    assert src.label_counts().tolist() == [2, 1] and src.known_counts().tolist() == [3, 3]
    assert not src.problems()
    plain = examples(src.dataset(40, 5))[0]
    assert set(plain) == EXAMPLE_KEYS | {"labels/category", "label_mask/category"}
    exs = examples(src.dataset(40, 5, with_meta=True))
    assert set(exs[0]) == EXAMPLE_KEYS | META_KEYS | {"labels/category", "label_mask/category"}
    for i, (ex, color) in enumerate(zip(exs, [GREEN, RED, BLUE])):
        check_letterboxed(ex["images"], color)
        assert ex["boxes"].shape == (5, 4) and ex["boxes"].dtype == np.float32
        assert ex["classes"].shape == (5,) and ex["classes"].dtype == np.int32
        assert (ex["boxes"] == -1).all() and (ex["classes"] == -1).all()
        assert ex["dataset_id"] == 3 and ex["dataset_id"].dtype == np.int32
        assert ex["image_id"] == i and ex["image_id"].dtype == np.int64
        assert ex["labels/category"].dtype == np.float32
        np.testing.assert_array_equal(ex["labels/category"], src.labels[i])
        np.testing.assert_array_equal(ex["label_mask/category"], [1, 1])
        np.testing.assert_allclose(ex["scale"], 2.0)
        np.testing.assert_allclose(ex["pad"], [0, 4])
        np.testing.assert_array_equal(ex["orig_size"], [16, 20])
    shuffled = examples(src.dataset(40, 1, shuffle=True, seed=1, with_meta=True))
    assert sorted(int(ex["image_id"]) for ex in shuffled) == [0, 1, 2]


def test_folder_given_classes_and_errors(folder_root, tmp_path):
    """The head's classes order the labels; unknown folders and empty splits raise."""
    src = ImageFolderSource("clothes", str(folder_root), "train", head="category",
                            class_names=["dog", "bird", "cat"])
    np.testing.assert_array_equal(src.labels, [[0, 0, 1], [0, 0, 1], [1, 0, 0]])
    assert src.label_counts().tolist() == [1, 0, 2]
    with pytest.raises(DataError) as info:
        ImageFolderSource("clothes", str(folder_root), "train", head="category",
                          class_names=["cat"])
    message = str(info.value)
    assert "unknown class 'dog'" in message and str(folder_root / "train" / "dog") in message
    assert "head 'category' (cat)" in message and "\n" not in message
    with pytest.raises(DataError, match="split with no rows: the folder does not exist"):
        ImageFolderSource("clothes", str(folder_root), "val", head="category")
    (tmp_path / "clothes" / "test" / "cat").mkdir(parents=True)
    (tmp_path / "clothes" / "test" / "cat" / "a.txt").write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match=r"clothes/test: split with no rows: no image file"):
        ImageFolderSource("clothes", str(folder_root), "test", head="category")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_classification(tmp_path, fmt):
    """Ids resolve to files, classes sort, missing labels mask whole rows, the split filters."""
    images = tmp_path / "images"
    for name, color in [("a.jpg", RED), ("b.png", GREEN), ("c.png", BLUE), ("d.jpeg", GREY),
                        ("d.png", RED), ("sub/e.webp", GREY), ("f.jpg", GREY)]:
        write_image(images / name, color)
    rows = {"id": ["a", "v", "b.png", "c", "d", "sub/e", "f"],
            "split": ["train", "val", "train", "train", "train", "train", "train"],
            "label": ["dog", "cat", "cat", None, "", "-1", "dog"]}
    table = write_table(tmp_path, rows, fmt)
    src = TableSource("pets", str(table), str(images), "train", head="pet",
                      kind="classification", label_column="label", dataset_id=1)
    assert src.class_names == ["cat", "dog"] and src.origin == str(table)
    assert src.ids == ["a", "b.png", "c", "d", "sub/e", "f"]
    assert [pathlib.Path(p).relative_to(images).as_posix() for p in src.paths] == [
        "a.jpg", "b.png", "c.png", "d.jpeg", "sub/e.webp", "f.jpg"]
    assert src.where[:2] == ["row 1 (id=a)", "row 3 (id=b.png)"]
    np.testing.assert_array_equal(src.labels, [[0, 1], [1, 0], [0, 0], [0, 0], [0, 0], [0, 1]])
    np.testing.assert_array_equal(src.label_mask.sum(axis=1), [2, 2, 0, 0, 0, 2])
    assert src.label_counts().tolist() == [1, 2] and src.known_counts().tolist() == [3, 3]
    assert not src.problems(check_images=False)
    exs = examples(src.dataset(40, 2, with_meta=True))
    assert [int(ex["image_id"]) for ex in exs] == list(range(6))
    check_letterboxed(exs[1]["images"], GREEN)
    np.testing.assert_array_equal(exs[1]["labels/pet"], [1, 0])
    np.testing.assert_array_equal(exs[2]["label_mask/pet"], [0, 0])
    assert (exs[2]["boxes"] == -1).all() and exs[2]["dataset_id"] == 1
    mapped = TableSource("pets", str(table), str(images), "train", head="pet",
                         kind="classification", label_column="label",
                         class_names=["fish", "dog", "cat"])
    np.testing.assert_array_equal(mapped.labels[:2], [[0, 1, 0], [0, 0, 1]])
    assert mapped.known_counts().tolist() == [3, 3, 3]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_numeric_classes_and_no_split_column(tmp_path, fmt):
    """Integer classes (floats with NaN in the file) are names "3", sorted as numbers."""
    table = write_table(tmp_path, {"id": ["a", "b", "c", "d"],
                                   "label": [3.0, 10.0, -1.0, np.nan]}, fmt)
    src = TableSource("n", str(table), str(tmp_path), "any", head="h", kind="classification",
                      label_column="label", split_column=None)
    assert src.class_names == ["3", "10"] and src.num_images == 4
    np.testing.assert_array_equal(src.label_mask.sum(axis=1), [2, 2, 0, 0])


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_multilabel(tmp_path, fmt):
    """Tags are the numeric columns (not the text one); unknown values mask one tag."""
    images = tmp_path / "images"
    for name, color in [("0001.jpg", RED), ("0002.jpg", GREEN), ("0003.jpg", BLUE)]:
        write_image(images / name, color)
    rows = {"uuid": ["0001", "0002", "0009", "0003"], "split": ["train", "train", "val", "train"],
            "source": ["web", "pixel", "web", "web"], "hat": [1.0, np.nan, 0.0, -1.0],
            "bag": [0, 1, 1, 1], "belt": [True, False, False, True]}
    table = write_table(tmp_path, rows, fmt)
    src = TableSource("tags", str(table), str(images), "train", head="tags", kind="multilabel",
                      id_column="uuid")
    assert src.class_names == ["hat", "bag", "belt"] and src.ids == ["0001", "0002", "0003"]
    np.testing.assert_array_equal(src.labels, [[1, 0, 1], [0, 1, 0], [0, 1, 1]])
    np.testing.assert_array_equal(src.label_mask, [[1, 1, 1], [0, 1, 1], [0, 1, 1]])
    assert src.label_counts().tolist() == [1, 2, 2] and src.known_counts().tolist() == [1, 3, 3]
    exs = examples(src.dataset(40, 3))
    check_letterboxed(exs[2]["images"], BLUE)
    np.testing.assert_array_equal(exs[1]["labels/tags"], [0, 1, 0])
    np.testing.assert_array_equal(exs[1]["label_mask/tags"], [0, 1, 1])
    assert exs[0]["label_mask/tags"].dtype == np.float32
    # A text column of 0/1 ("" unknown), named; a head tag the table lacks is unknown.
    table = write_table(tmp_path, {**rows, "note": ["1", "", "0", "0"]}, fmt, "notes")
    mapped = TableSource("tags", str(table), str(images), "train", head="tags",
                         kind="multilabel", id_column="uuid", tag_columns=["note", "bag"],
                         class_names=["shoe", "bag", "note"])
    np.testing.assert_array_equal(mapped.labels, [[0, 0, 1], [0, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(mapped.label_mask, [[0, 1, 1], [0, 1, 0], [0, 1, 1]])


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_structure_errors(tmp_path, fmt):
    """Each problem names the file, the row and the column, on one line."""
    rows = {"id": ["a", "v", "b", None, "a", None], "split": ["train", "val"] + ["train"] * 4,
            "label": ["cat", "dog", "dog", "cat", "cat", "dog"]}
    table = write_table(tmp_path, rows, fmt)
    name = table.name

    def error(**kwargs) -> str:
        args = {"head": "pet", "kind": "classification", "label_column": "label", **kwargs}
        return error_of("pets", str(table), str(tmp_path), args.pop("split", "train"), **args)

    assert f"{name}: no column 'fold'; the columns are id, split, label" in error(
        split_column="fold")
    assert f"{name}: no column 'uuid'" in error(id_column="uuid")
    assert "no column 'klass' (label_column)" in error(label_column="klass")
    assert "needs label_column" in error(label_column=None)
    message = error(split="test")
    assert f"{name}: split with no rows: column 'split' has no value 'test'" in message
    assert "values present: 'train', 'val'" in message
    message = error()  # empty ids in rows 4 and 6, id 'a' in rows 1 and 5
    assert message.startswith(f"2 problems in {table}")
    assert f"{name}: row 4, column 'id': empty id" in message and "(and 1 more rows)" in message
    assert f"{name}: rows 1 and 5, column 'id': duplicate id 'a'" in message
    table = write_table(tmp_path, {**rows, "id": list("avbcde")}, fmt)
    message = error(class_names=["cat"])
    assert f"{name}: row 3 (id=b), column 'label': value 'dog' is not a class of head 'pet'" \
           f" (cat)" in message
    assert "(and 1 more rows)" in message and "\n" not in message
    table = write_table(tmp_path, {**rows, "id": list("avbcde"), "label": [""] * 6}, fmt)
    assert "column 'label' has no class in split 'train'" in error()
    with pytest.raises(ValueError, match="kind must be one of"):
        TableSource("pets", str(table), str(tmp_path), "train", head="pet", kind="regression")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_tag_errors(tmp_path, fmt):
    """Bad tag values, unknown tags and missing tag columns name the file, row and column."""
    rows = {"id": ["a", "v", "b", "c"], "split": ["train", "val", "train", "train"],
            "hat": [1, 1, 2, 2], "bag": [0.0, 0.0, 1.0, 0.5], "txt": ["1", "0", "yes", "0"]}
    table = write_table(tmp_path, rows, fmt)
    name = table.name

    def error(**kwargs) -> str:
        return error_of("t", str(table), str(tmp_path), "train", head="tags",
                        kind="multilabel", **kwargs)

    message = error(tag_columns=["hat", "bag", "txt"])
    assert message.startswith(f"3 problems in {table}")
    assert (f"{name}: row 3 (id=b), column 'hat': value 2 is not 0/1, empty or -1 "
            "(and 1 more rows)") in message
    assert f"{name}: row 4 (id=c), column 'bag': value 0.5 is not 0/1" in message
    assert f"{name}: row 3 (id=b), column 'txt': value 'yes' is not 0/1" in message
    assert f"{name}: no column 'cap' (tag_columns)" in error(tag_columns=["hat", "cap"])
    message = error(tag_columns=["bag"], class_names=["hat"])
    assert f"{name}: column 'bag': unknown tag 'bag', not a tag of head 'tags' (hat)" in message
    only_text = write_table(tmp_path, {"id": ["a"], "split": ["train"], "t": ["x"]}, fmt, "txt")
    assert "no tag column" in error_of("t", str(only_text), str(tmp_path), "train",
                                       head="tags", kind="multilabel")


def test_table_file_errors(tmp_path):
    """A missing, unreadable or non-table file is named."""
    for path, expected in [(tmp_path / "data.xlsx", "not a table file"),
                           (tmp_path / "none.csv", "table file not found"),
                           (tmp_path / "bad.PQ", "not readable as Parquet")]:
        if path.suffix != ".csv":
            path.write_bytes(b"\x00garbage\xff" * 10)
        message = error_of("t", str(path), str(tmp_path), "train", head="h",
                           kind="classification", label_column="label")
        assert message.startswith(f"{path}: {expected}") and "\n" not in message


def test_missing_and_corrupt_images(tmp_path, capsys):
    """A missing file is an error; a corrupt one fails, or is skipped with on_corrupt="skip"."""
    images = tmp_path / "images"
    write_image(images / "a.jpg", RED)
    write_image(images / "c.jpg", BLUE)
    (images / "z.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated garbage")
    table = write_table(tmp_path, {"id": ["a", "m", "z"], "split": ["train"] * 3,
                                   "label": ["x", "y", "x"]}, "csv")
    src = TableSource("t", str(table), str(images), "train", head="h", kind="classification",
                      label_column="label")
    quick = src.problems(check_images=False)
    assert len(quick) == 1
    missing = quick[0]
    assert missing.kind == "error" and missing.image_id == 1
    assert str(missing) == f"{table}: row 2 (id=m): file {images / 'm.jpg'} is missing"
    problems = src.problems()
    assert [(p.kind, p.image_id) for p in problems] == [("error", 1), ("corrupt", 2)]
    assert f"row 3 (id=z): file {images / 'z.jpg'}: cannot decode image" in str(problems[1])
    for on_corrupt in ("fail", "skip"):
        with pytest.raises(DataError, match="row 2 .id=m.: file .* is missing"):
            src.check(on_corrupt)
    with pytest.raises(ValueError, match="on_corrupt must be one of"):
        src.check("ignore")
    folder = tmp_path / "set" / "train"
    for name in ("a.jpg", "z.jpg", "c.jpg"):
        (folder / "k").mkdir(parents=True, exist_ok=True)
        (folder / "k" / name).write_bytes((images / name).read_bytes())
    src = ImageFolderSource("set", str(tmp_path / "set"), "train", head="h")
    with pytest.raises(DataError, match=r"1 problem in .*set/train\n  - .*z.jpg: cannot decode"):
        src.dataset(40, 1)
    assert src.check("skip") == [2]
    exs = examples(src.dataset(40, 1, on_corrupt="skip", with_meta=True))
    assert [int(ex["image_id"]) for ex in exs] == [0, 1]
    assert "set: skipped 1 corrupt image(s) of 3" in capsys.readouterr().out


@pytest.mark.real_data
def test_real_image_label_sets(shared):
    """The clothing folders and the ccp_tags table read as documented."""
    root = shared("datasets", "clothing")
    src = ImageFolderSource("clothing", str(root), "train", head="category")
    assert src.num_images == 3068 and src.num_classes == 10
    counts = src.label_counts()
    assert src.class_names[int(np.argmax(counts))] == "t-shirt" and counts.max() == 795
    root = shared("datasets", "ccp_tags")
    src = TableSource("ccp_tags", str(root / "data.parquet"), str(root / "images"), "train",
                      head="tags", kind="multilabel", id_column="uuid")
    assert src.num_images == 1459 and src.num_classes == 33
    assert "source" not in src.class_names and "shoes" in src.class_names
    assert (src.known_counts() == 1459).all()
    assert not src.problems(check_images=False)
