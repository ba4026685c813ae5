"""Image-level sample datasets made from the embedded detection samples (no download).

`make_label_samples(sample_root, out_dir)` reads the `shapes` and `signs` COCO samples of
`data_pipelines.sample_data` and writes, for the classification and multi-label heads:

    out_dir/shape_folder/{train,val,test}/<class>/*.jpg   the class of the largest shape
    out_dir/sign_tags/images/*.jpg
    out_dir/sign_tags/labels.csv     id, split, star, cross, ring (1 when the sign shows;
                                     every 7th row has one tag missing: empty)

The images are links (copies where links are refused) of the detection samples, so the
labels are true to the pixels and a model learns them in a few hundred CPU steps. Used by
the tests and the multi-task notebook's tiny preset; written to a temporary sibling
folder renamed into place, so a failed run leaves nothing half-written.
"""
import csv
import json
import os
import shutil
import tempfile
from typing import Dict, List

FOLDER_DATASET, TABLE_DATASET = "shape_folder", "sign_tags"
TAGS = ("star", "cross", "ring")
SPLITS = ("train", "val", "test")
MISSING_EVERY = 7


def _place(source: str, target: str) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _coco(root: str, split: str) -> Dict:
    with open(os.path.join(root, "annotations", f"instances_{split}.json"),
              encoding="utf-8") as stream:
        return json.load(stream)


def _largest_class(data: Dict) -> Dict[int, str]:
    """image id -> name of the category of its largest box."""
    names = {c["id"]: c["name"] for c in data["categories"]}
    best: Dict[int, tuple] = {}
    for ann in data["annotations"]:
        area = ann["bbox"][2] * ann["bbox"][3]
        if area > best.get(ann["image_id"], (-1.0, ""))[0]:
            best[ann["image_id"]] = (area, names[ann["category_id"]])
    return {image_id: name for image_id, (_, name) in best.items()}


def _write_folder(sample_root: str, out: str) -> None:
    root = os.path.join(sample_root, "shapes")
    for split in SPLITS:
        data = _coco(root, split)
        largest = _largest_class(data)
        for image in data["images"]:
            if image["id"] in largest:
                name = os.path.basename(image["file_name"])
                _place(os.path.join(root, "images", image["file_name"]),
                       os.path.join(out, FOLDER_DATASET, split, largest[image["id"]], name))


def _write_table(sample_root: str, out: str) -> None:
    root = os.path.join(sample_root, "signs")
    rows: List[List[str]] = []
    for split in SPLITS:
        data = _coco(root, split)
        names = {c["id"]: c["name"] for c in data["categories"]}
        shown: Dict[int, set] = {}
        for ann in data["annotations"]:
            shown.setdefault(ann["image_id"], set()).add(names[ann["category_id"]])
        for image in data["images"]:
            stem = os.path.splitext(os.path.basename(image["file_name"]))[0]
            _place(os.path.join(root, "images", image["file_name"]),
                   os.path.join(out, TABLE_DATASET, "images", stem + ".jpg"))
            values = ["1" if tag in shown.get(image["id"], ()) else "0" for tag in TAGS]
            if len(rows) % MISSING_EVERY == 0:
                values[len(rows) % len(TAGS)] = ""
            rows.append([stem, split] + values)
    with open(os.path.join(out, TABLE_DATASET, "labels.csv"), "w", newline="",
              encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["id", "split", *TAGS])
        writer.writerows(rows)


def make_label_samples(sample_root: str, out_dir: str) -> Dict[str, str]:
    """Writes the image-folder and table samples (once; an existing folder is reused).

    Args:
        sample_root: a folder made by `data_pipelines.sample_data.ensure_sample_data`.
        out_dir: where the two datasets go.

    Returns:
        `{"shape_folder": root, "sign_tags": root}`.
    """
    roots = {name: os.path.join(out_dir, name) for name in (FOLDER_DATASET, TABLE_DATASET)}
    if all(os.path.isdir(path) for path in roots.values()):
        return roots
    parent = os.path.dirname(os.path.abspath(out_dir)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".labels_", dir=parent)
    try:
        _write_folder(sample_root, tmp)
        _write_table(sample_root, tmp)
        os.makedirs(out_dir, exist_ok=True)
        for name, path in roots.items():
            if not os.path.isdir(path):
                os.replace(os.path.join(tmp, name), path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return roots
