"""An embedded default dataset: two small COCO detection datasets the project draws itself.

`generate(out_dir)` writes, deterministically for a seed (byte-identical files)::

    out_dir/shapes/annotations/instances_{train,val,test}.json   circle, triangle, square
    out_dir/shapes/images/*.jpg
    out_dir/shapes/SOURCE.md
    out_dir/signs/...                                            star, cross, ring
    out_dir/composite.jpg, composite.json     one image with objects of both datasets
    out_dir/sample_data.json                  marker: seed, sizes, stats (written last)

Everything is written to a temporary sibling folder that is renamed into place, so a
failed run leaves nothing half-written. `ensure_sample_data(out_dir)` reuses a complete
folder made with the same seed and sizes and generates only when it is missing.

CLI: `python -m data_pipelines.sample_data --out DIR [--seed 0] [--train N --val N
--test N] [--overwrite | --if-missing]`.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
import time
from typing import Any, Optional, Sequence

import numpy as np

from data_pipelines import sample_shapes
from effdet_tf.cli import make_parser, run_cli
from effdet_tf.errors import DataError

# name -> class names (category ids 1..3 in this order). The two sets are disjoint.
DATASETS = {"shapes": ("circle", "triangle", "square"), "signs": ("star", "cross", "ring")}
SPLITS = ("train", "val", "test")
DEFAULT_SIZES = {"train": 240, "val": 48, "test": 48}
# Sizes are chosen for the demo's 128 px model input: an image is shrunk by 0.5-0.8 to
# fit it, so objects (32-160 px stored) are 16-128 px where the model sees them.
IMAGE_SIDE_RANGE = (200, 256)  # width and height drawn independently, inclusive
MIN_OBJECTS, MAX_OBJECTS = 3, 6
# Unlabelled objects of the other dataset's kinds per image: as in real photos, a
# dataset's images hold things its classes do not cover, so each head learns that the
# other head's objects are background to it.
MIN_DISTRACTORS, MAX_DISTRACTORS = 1, 3
MIN_VISIBLE = 0.85  # objects may touch and overlap a little, never hide each other
SIZE_BANDS = ((36.0, 56.0, 0.35), (56.0, 96.0, 0.5), (96.0, 140.0, 0.15))
JPEG_QUALITY = 90
MARKER = "sample_data.json"
FORMAT_VERSION = 2
COMPOSITE_SIZE = (384, 256)  # width, height: a 3 x 2 grid of 128 px cells, one object each
COMPOSITE_SIZE_BAND = ((96.0, 120.0, 1.0),)
# Each class has its own colour family (varied per object) on muted backgrounds: shape and
# colour together make the classes learnable in the few hundred steps a CPU demo affords.
PALETTE = {"circle": (225, 45, 45), "triangle": (45, 185, 60), "square": (45, 95, 230),
           "star": (240, 195, 30), "cross": (195, 45, 200), "ring": (30, 195, 205)}
MUTED_BACKGROUND = 0.7
_OWNED = frozenset(DATASETS) | {"composite.jpg", "composite.json", MARKER}
_SPLIT_SEED = {split: i for i, split in enumerate(SPLITS)}
_COMPOSITE_SEED = 99


def _size_class(area: float) -> str:
    """COCO's size class of a box area in pixels."""
    if area < 32 ** 2:
        return "small"
    return "medium" if area < 96 ** 2 else "large"


def _draw_split(images_dir: pathlib.Path, name: str, split: str, count: int, seed: int,
                first_ids: tuple[int, int]) -> tuple[list[dict], list[dict]]:
    """Draws and saves one split; returns its COCO `images` and `annotations` lists."""
    class_names = DATASETS[name]
    dataset_index = list(DATASETS).index(name)
    others = [kind for other, kinds in DATASETS.items() if other != name for kind in kinds]
    images, annotations = [], []
    image_id, ann_id = first_ids
    low, high = IMAGE_SIDE_RANGE
    for index in range(count):
        # One generator per image: an image does not depend on the other split sizes.
        rng = np.random.default_rng([seed, dataset_index, _SPLIT_SEED[split], index])
        width, height = (int(v) for v in rng.integers(low, high + 1, size=2))
        count = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
        labels = rng.integers(len(class_names), size=count)
        distractors = rng.integers(
            len(others), size=int(rng.integers(MIN_DISTRACTORS, MAX_DISTRACTORS + 1)))
        # Own classes first (the first object is always placed), then the distractors.
        kinds = [class_names[int(k)] for k in labels] + [others[int(k)] for k in distractors]
        image, objects = sample_shapes.draw_scene(
            rng, width, height, kinds, size_bands=SIZE_BANDS,
            backgrounds=sample_shapes.SMOOTH_BACKGROUNDS, min_visible=MIN_VISIBLE,
            palette=PALETTE, muted_background=MUTED_BACKGROUND)
        file_name = f"{split}_{index:04d}.jpg"
        image.save(images_dir / file_name, format="JPEG", quality=JPEG_QUALITY)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for obj in objects:
            if obj.kind not in class_names:
                continue  # a distractor: in the image, not in this dataset's classes
            x, y, w, h = obj.bbox
            annotations.append({"id": ann_id, "image_id": image_id,
                                "category_id": class_names.index(obj.kind) + 1,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
            ann_id += 1
        image_id += 1
    return images, annotations


def _split_stats(name: str, images: list[dict], annotations: list[dict]) -> dict[str, Any]:
    """Counts of images, boxes, boxes per class and per COCO size class."""
    class_names = DATASETS[name]
    per_class = {c: 0 for c in class_names}
    per_size = {"small": 0, "medium": 0, "large": 0}
    for ann in annotations:
        per_class[class_names[ann["category_id"] - 1]] += 1
        per_size[_size_class(ann["area"])] += 1
    return {"images": len(images), "boxes": len(annotations),
            "per_class": per_class, "per_size": per_size}


def _write_json(path: pathlib.Path, payload: Any) -> None:
    """Writes JSON deterministically (fixed key order, trailing newline)."""
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")


def _write_dataset(root: pathlib.Path, name: str, seed: int,
                   sizes: dict[str, int]) -> dict[str, Any]:
    """Writes one dataset (annotations, images, SOURCE.md); returns its per-split stats."""
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    categories = [{"id": i + 1, "name": c, "supercategory": name}
                  for i, c in enumerate(DATASETS[name])]
    stats = {}
    next_ids = (1, 1)
    for split in SPLITS:
        images, annotations = _draw_split(root / "images", name, split, sizes[split], seed,
                                          next_ids)
        next_ids = (next_ids[0] + len(images), next_ids[1] + len(annotations))
        _write_json(root / "annotations" / f"instances_{split}.json", {
            "info": {"description": f"effdet_tf sample dataset '{name}' ({split})",
                     "version": str(FORMAT_VERSION), "seed": seed},
            "licenses": [], "images": images, "annotations": annotations,
            "categories": categories})
        stats[split] = _split_stats(name, images, annotations)
    (root / "SOURCE.md").write_text(_source_md(name, seed, sizes, stats), encoding="utf-8")
    return stats


def _source_md(name: str, seed: int, sizes: dict[str, int], stats: dict[str, Any]) -> str:
    """The SOURCE.md text of one generated dataset."""
    class_names = DATASETS[name]
    head = "| split | images | boxes | " + " | ".join(class_names) + " | small | medium | large |"
    rows = [head, "|" + "---|" * (len(class_names) + 6)]
    for split in SPLITS:
        s = stats[split]
        cells = [split, s["images"], s["boxes"], *s["per_class"].values(),
                 *s["per_size"].values()]
        rows.append("| " + " | ".join(str(c) for c in cells) + " |")
    low, high = IMAGE_SIDE_RANGE
    classes = ", ".join(f"{i + 1}={c}" for i, c in enumerate(class_names))
    return f"""# {name}: generated sample detection dataset ({", ".join(class_names)})

Synthetic images drawn by this project (`data_pipelines/sample_data.py` and
`data_pipelines/sample_shapes.py`); nothing is downloaded. Free to use and redistribute.

## How to regenerate

```
python -m data_pipelines.sample_data --out <DIR> --seed {seed} \\
    --train {sizes["train"]} --val {sizes["val"]} --test {sizes["test"]}
```

The same seed and sizes give byte-identical JSON and JPEG files (same numpy and Pillow).

## Contents

{chr(10).join(rows)}

- Categories (COCO `category_id`): {classes}
- Size classes are COCO's (box area < 32^2, < 96^2, larger) at the stored image size.

## How it is drawn

- Image width and height are drawn independently in {low}-{high} px (varied aspect
  ratios), saved as RGB JPEG quality {JPEG_QUALITY} in the flat `images/` folder.
- Backgrounds: smooth colour noise or linear gradients, pulled {MUTED_BACKGROUND:.0%} of
  the way to grey, plus pixel noise and sometimes a slight blur.
- {MIN_OBJECTS}-{MAX_OBJECTS} labelled objects per image, classes uniform, sides drawn from
  {", ".join(f"{b[0]:.0f}-{b[1]:.0f} px" for b in SIZE_BANDS)} with probabilities
  {" / ".join(str(b[2]) for b in SIZE_BANDS)}, random rotation, a linear shade, sometimes
  an outline. Each class has its own colour family (a base colour varied by up to 25 per
  channel): {", ".join(f"{k} {v}" for k, v in PALETTE.items() if k in DATASETS[name])}.
- {MIN_DISTRACTORS}-{MAX_DISTRACTORS} unlabelled distractors per image: shapes of the other sample
  dataset's kinds, which this dataset does not annotate (as real photos hold objects
  their dataset has no class for).
- Occlusion: later objects are drawn over earlier ones, but a placement is accepted only
  if every earlier object keeps at least {sample_shapes.MIN_VISIBLE:.0%} of its pixels
  visible; objects that cannot be placed are left out, so every drawn object is labelled.
- Boxes `[x, y, w, h]` are tight around the **full** drawn shape (pixel-exact, from its
  mask), area = w * h, iscrowd = 0. Objects lie entirely inside the image.
- Image and annotation ids are unique across the three splits.
"""


def _draw_composite(root: pathlib.Path, seed: int) -> dict[str, Any]:
    """Writes composite.jpg (objects of every dataset, no overlap) and composite.json."""
    rng = np.random.default_rng([seed, _COMPOSITE_SEED])
    kinds = [kind for names in DATASETS.values() for kind in names]
    kinds = [kinds[int(i)] for i in rng.permutation(len(kinds))]
    width, height = COMPOSITE_SIZE
    image, objects = sample_shapes.draw_scene(
        rng, width, height, kinds, size_bands=COMPOSITE_SIZE_BAND,
        backgrounds=sample_shapes.SMOOTH_BACKGROUNDS, grid=(3, 2), palette=PALETTE,
        muted_background=MUTED_BACKGROUND)
    image.save(root / "composite.jpg", format="JPEG", quality=JPEG_QUALITY)
    boxes: dict[str, list[dict]] = {name: [] for name in DATASETS}
    for obj in objects:
        name = next(n for n, classes in DATASETS.items() if obj.kind in classes)
        boxes[name].append({"category_id": DATASETS[name].index(obj.kind) + 1,
                            "name": obj.kind, "bbox": list(obj.bbox)})
    payload = {"file_name": "composite.jpg", "width": width, "height": height,
               "objects": boxes}
    _write_json(root / "composite.json", payload)
    return payload


def _check_sizes(sizes: dict[str, int]) -> None:
    """Raises DataError unless every split size is a positive integer."""
    for split, count in sizes.items():
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise DataError(f"sample data: --{split} must be a positive integer, got {count!r}")


def _make_temp_dir(parent: pathlib.Path, prefix: str) -> pathlib.Path:
    """A new folder in `parent` with the usual permissions (mkdtemp alone gives 0700)."""
    path = pathlib.Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    umask = os.umask(0o022)
    os.umask(umask)
    path.chmod(0o777 & ~umask)
    return path


def _install(tmp: pathlib.Path, out_dir: pathlib.Path, overwrite: bool) -> None:
    """Renames the finished `tmp` folder to `out_dir`, replacing an owned one if allowed."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise DataError(f"{out_dir} exists and is not empty; pass overwrite=True "
                            "(--overwrite) to replace it")
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in _OWNED)
        if foreign:
            raise DataError(f"{out_dir} holds files sample_data did not write ({foreign[:5]}); "
                            "refusing to replace it")
        backup = _make_temp_dir(out_dir.parent, f".{out_dir.name}.old-")
        os.replace(out_dir, backup)
        try:
            os.replace(tmp, out_dir)
        except OSError:
            os.replace(backup, out_dir)
            raise
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)  # an empty existing folder is replaced atomically


def _result(out_dir: pathlib.Path, marker: dict[str, Any], generated: bool) -> dict[str, Any]:
    """The paths and stats returned by `generate` and `ensure_sample_data`."""
    datasets = {}
    for name, info in marker["datasets"].items():
        root = out_dir / name
        datasets[name] = {
            "root": str(root), "image_dir": str(root / "images"),
            "annotations": {s: str(root / "annotations" / f"instances_{s}.json")
                            for s in SPLITS},
            "class_names": list(info["class_names"]),
            "category_ids": list(info["category_ids"]), "stats": info["stats"]}
    return {"root": str(out_dir), "seed": marker["seed"], "sizes": dict(marker["sizes"]),
            "datasets": datasets, "composite": str(out_dir / "composite.jpg"),
            "composite_json": str(out_dir / "composite.json"),
            "marker": str(out_dir / MARKER), "generated": generated}


def generate(out_dir: str | os.PathLike, *, seed: int = 0,
             num_train: int = DEFAULT_SIZES["train"], num_val: int = DEFAULT_SIZES["val"],
             num_test: int = DEFAULT_SIZES["test"], overwrite: bool = False) -> dict[str, Any]:
    """Generates the two sample datasets and the composite image under `out_dir`.

    Args:
        out_dir: folder to create; must be absent or empty unless `overwrite`.
        seed: random seed; the same seed and sizes give byte-identical files.
        num_train: images per dataset in the train split.
        num_val: images per dataset in the val split.
        num_test: images per dataset in the test split.
        overwrite: replace an existing folder written by this generator.

    Returns:
        `{"root", "seed", "sizes", "datasets": {name: {"root", "image_dir", "annotations":
        {split: path}, "class_names", "category_ids", "stats"}}, "composite",
        "composite_json", "marker", "generated": True, "seconds"}`.

    Raises:
        DataError: a size is not positive, or `out_dir` is not empty and may not be replaced.
    """
    start = time.perf_counter()
    out_dir = pathlib.Path(out_dir).absolute()
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    _check_sizes(sizes)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir} exists and is not a folder")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise DataError(f"{out_dir} exists and is not empty; pass overwrite=True "
                        "(--overwrite) to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _make_temp_dir(out_dir.parent, f".{out_dir.name}.tmp-")
    try:
        marker: dict[str, Any] = {"generator": "data_pipelines.sample_data",
                                  "format_version": FORMAT_VERSION, "seed": int(seed),
                                  "sizes": {k: int(v) for k, v in sizes.items()},
                                  "datasets": {}}
        for name, class_names in DATASETS.items():
            stats = _write_dataset(tmp / name, name, int(seed), sizes)
            marker["datasets"][name] = {"class_names": list(class_names),
                                        "category_ids": list(range(1, len(class_names) + 1)),
                                        "stats": stats}
        _draw_composite(tmp, int(seed))
        _write_json(tmp / MARKER, marker)  # last: its presence means the folder is complete
        _install(tmp, out_dir, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    result = _result(out_dir, marker, generated=True)
    result["seconds"] = time.perf_counter() - start
    return result


def _complete_marker(out_dir: pathlib.Path, seed: int,
                     sizes: dict[str, int]) -> Optional[dict[str, Any]]:
    """The marker of a complete folder generated with `seed` and `sizes`, else None."""
    try:
        marker = json.loads((out_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (not isinstance(marker, dict) or marker.get("format_version") != FORMAT_VERSION
            or marker.get("seed") != seed or marker.get("sizes") != sizes
            or set(marker.get("datasets", {})) != set(DATASETS)):
        return None
    needed = [out_dir / "composite.jpg", out_dir / "composite.json"]
    needed += [out_dir / name / "annotations" / f"instances_{s}.json"
               for name in DATASETS for s in SPLITS]
    return marker if all(p.is_file() for p in needed) else None


def ensure_sample_data(out_dir: str | os.PathLike, seed: int = 0, *,
                       num_train: int = DEFAULT_SIZES["train"],
                       num_val: int = DEFAULT_SIZES["val"],
                       num_test: int = DEFAULT_SIZES["test"]) -> dict[str, Any]:
    """Returns the sample data under `out_dir`, generating it only when missing.

    A folder whose marker records the same seed and sizes is reused as it is; a folder
    written by this generator with other settings is regenerated; any other non-empty
    folder is refused.

    Args:
        out_dir: folder holding (or to hold) the sample data.
        seed: random seed.
        num_train: images per dataset in the train split.
        num_val: images per dataset in the val split.
        num_test: images per dataset in the test split.

    Returns:
        The same dict as `generate`; `"generated"` says whether files were written.
    """
    out_dir = pathlib.Path(out_dir).absolute()
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    _check_sizes(sizes)
    marker = _complete_marker(out_dir, int(seed), sizes)
    if marker is not None:
        return _result(out_dir, marker, generated=False)
    try:
        return generate(out_dir, seed=seed, num_train=num_train, num_val=num_val,
                        num_test=num_test, overwrite=True)
    except (DataError, OSError):
        # Another process may have finished the same folder first.
        marker = _complete_marker(out_dir, int(seed), sizes)
        if marker is None:
            raise
        return _result(out_dir, marker, generated=False)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: generates the sample datasets; returns the exit code."""
    parser = make_parser("python -m data_pipelines.sample_data",
                         description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=DEFAULT_SIZES["train"],
                        help="images per dataset in the train split")
    parser.add_argument("--val", type=int, default=DEFAULT_SIZES["val"])
    parser.add_argument("--test", type=int, default=DEFAULT_SIZES["test"])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true",
                      help="replace an existing folder written by this generator")
    mode.add_argument("--if-missing", action="store_true",
                      help="reuse the folder if it already holds the same data")
    args = parser.parse_args(argv)
    sizes = {"num_train": args.train, "num_val": args.val, "num_test": args.test}
    if args.if_missing:
        result = ensure_sample_data(args.out, args.seed, **sizes)
    else:
        result = generate(args.out, seed=args.seed, overwrite=args.overwrite, **sizes)
    verb = "generated" if result["generated"] else "already present"
    took = f" in {result['seconds']:.1f} s" if "seconds" in result else ""
    print(f"{result['root']}: {verb}{took} (seed {result['seed']})")
    for name, info in result["datasets"].items():
        counts = ", ".join(f"{s} {st['images']} images / {st['boxes']} boxes"
                           for s, st in info["stats"].items())
        print(f"  {name} ({', '.join(info['class_names'])}): {counts}")
    print(f"  composite: {result['composite']}")
    return 0


if __name__ == "__main__":
    run_cli(main)
