"""COCO detection datasets (json + image folder) as `tf.data` examples of the raw batch."""
import contextlib
import io
import os
import warnings
from typing import AbstractSet, Any, Dict, List, Optional

import numpy as np
import tensorflow as tf
from pycocotools.coco import COCO

from effdet_tf.errors import DataError
from data_pipelines import validate as val
from data_pipelines.decode import (ImageInfo, decoder_branch, keep_largest, slice_dataset,
                                   transform_boxes)
from data_pipelines.exclude import path_key

ON_CORRUPT = val.ON_CORRUPT
MIN_BOX_SIDE = 1e-3


class CocoSource:
    """One COCO dataset split: class mapping, validation and a `tf.data` pipeline.

    Classes are contiguous indices `0..C-1` in ascending `category_id` order, or, with
    `class_names` (a head's classes), in that order, matched by category name. Crowd
    annotations are ignored. Boxes are served as xyxy pixels of the letterboxed frame.
    EXIF orientations are applied; annotations are taken to be in the upright frame.

    Args:
        name: dataset name (the head it trains).
        annotation_file: COCO json.
        image_dir: folder the json's `file_name`s are relative to.
        dataset_id: index of the dataset, carried by every example.
        class_names: the class list of the head(s) it trains; each category is mapped to
            the class of the same name (a class it lacks has category id -1). None: its
            own categories.
        exclude: `data_pipelines.exclude.path_key`s of image files to leave out: their
            image entries and annotations are dropped as if the json lacked them (their
            number is `excluded`).

    Raises:
        DataError: the json is unreadable or not a json object, or a category is not
            in `class_names`.

    Example:
        >>> src = CocoSource("fruits", "fruits/annotations/instances_train.json",
        ...                  "fruits/images")
        >>> ds = src.dataset(512, 100, shuffle=True, repeat=True)
    """

    def __init__(self, name: str, annotation_file: str, image_dir: str, *,
                 dataset_id: int = 0, class_names: Optional[List[str]] = None,
                 exclude: AbstractSet[str] = frozenset()):
        self.name = name
        self.annotation_file = str(annotation_file)
        self.image_dir = str(image_dir)
        self.dataset_id = int(dataset_id)
        self._data = val.load_json(self.annotation_file)
        self.excluded = self._drop_files(exclude) if exclude else 0
        self._structure = val.check_structure(self._data, self.annotation_file)
        cats = [c for c in self._data.get("categories") or []
                if isinstance(c, dict) and isinstance(c.get("id"), int)]
        cats = sorted({c["id"]: c for c in cats}.values(), key=lambda c: c["id"])
        self.category_ids: List[int] = [c["id"] for c in cats]
        self.class_names: List[str] = [str(c.get("name", c["id"])) for c in cats]
        if class_names is not None:
            self._use_classes([str(n) for n in class_names])
        self._images = val.usable_images(self._data)
        self.image_ids: List[int] = [img["id"] for img in self._images]
        self._infos: Optional[List[ImageInfo]] = None
        self._coco: Optional[COCO] = None

    def _drop_files(self, exclude: AbstractSet[str]) -> int:
        """Drops the image entries whose file is in `exclude`, and their annotations."""
        images = self._data.get("images")
        if not isinstance(images, list):
            return 0
        dropped = {img.get("id") for img in images
                   if isinstance(img, dict) and isinstance(img.get("file_name"), str)
                   and path_key(os.path.join(self.image_dir, img["file_name"])) in exclude}
        if not dropped:
            return 0
        data = dict(self._data)
        data["images"] = [img for img in images
                          if not (isinstance(img, dict) and img.get("id") in dropped)]
        annotations = data.get("annotations")
        if isinstance(annotations, list):
            data["annotations"] = [a for a in annotations
                                   if not (isinstance(a, dict) and a.get("image_id") in dropped)]
        self._data = data
        return len(images) - len(data["images"])

    def _use_classes(self, class_names: List[str]) -> None:
        """Orders the classes as `class_names`, matching categories by name."""
        by_name = dict(zip(self.class_names, self.category_ids))
        unknown = [name for name in self.class_names if name not in class_names]
        if unknown:
            raise DataError(f"{self.annotation_file}: category '{unknown[0]}' is not a class "
                            f"of the head it trains ({', '.join(class_names)}); rename it "
                            "or add it to the head's `classes`")
        self.class_names = class_names
        self.category_ids = [by_name.get(name, -1) for name in class_names]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def coco(self) -> COCO:
        """The pycocotools `COCO` object of the json (built on first use, quietly).

        COCO files written by converters often lack `area` and `iscrowd`, which
        pycocotools' evaluation needs: a missing `area` is the box's `w * h` (the segment
        area COCO would give is unknown) and a missing `iscrowd` is 0.
        """
        if self._coco is None:
            for ann in self._data.get("annotations", []):
                if "area" not in ann:
                    box = ann.get("bbox") or [0, 0, 0, 0]
                    ann["area"] = float(box[2]) * float(box[3]) if len(box) == 4 else 0.0
                ann.setdefault("iscrowd", 0)
            coco = COCO()
            coco.dataset = self._data
            with contextlib.redirect_stdout(io.StringIO()):
                coco.createIndex()
            self._coco = coco
        return self._coco

    def image_infos(self) -> List[ImageInfo]:
        """Probes every image file once with PIL (size, orientation, decodability); cached."""
        if self._infos is None:
            paths = [os.path.join(self.image_dir, img["file_name"]) for img in self._images]
            self._infos = val.probe_all(paths)
        return self._infos

    def problems(self, check_images: bool = True) -> List[val.Problem]:
        """Every problem of the dataset, warnings included.

        Args:
            check_images: also open every image file.

        Returns:
            `Problem`s with kind "error", "corrupt" or "warning".
        """
        problems = list(self._structure)
        if check_images:
            problems += val.check_images(self._images, self.image_infos(),
                                         self.annotation_file, self.image_dir)
            problems += val.check_boxes(self._data, self._images, self.image_infos(),
                                        self.annotation_file)
        return problems

    def check(self, on_corrupt: str = "fail") -> List[int]:
        """Raises on any problem; with `on_corrupt="skip"` corrupt images are tolerated.

        Args:
            on_corrupt: "fail" or "skip".

        Returns:
            Ids of the corrupt images to skip.

        Raises:
            DataError: listing every problem.
            ValueError: `on_corrupt` is not "fail" or "skip".
        """
        return val.corrupt_to_skip(self.problems(check_images=True), on_corrupt,
                                   self.annotation_file)

    def labelled_images(self) -> int:
        """Number of images with at least one box of the head's classes."""
        return len(self._annotations_by_image())

    def _annotations_by_image(self) -> Dict[int, List[Dict[str, Any]]]:
        cat_index = {cid: i for i, cid in enumerate(self.category_ids)}
        by_image: Dict[int, List[Dict[str, Any]]] = {}
        for ann in self._data.get("annotations") or []:
            if (not isinstance(ann, dict) or ann.get("iscrowd", 0)
                    or ann.get("category_id") not in cat_index):
                continue
            bbox = ann.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4):
                continue
            by_image.setdefault(ann.get("image_id"), []).append(
                {"bbox": bbox, "class": cat_index[ann["category_id"]]})
        return by_image

    def _examples(self, image_size: int, max_boxes: int, skip_ids: List[int]) -> Dict[str, Any]:
        """Builds the per-image arrays the `tf.data` pipeline slices (original-frame boxes)."""
        by_image = self._annotations_by_image()
        skip = set(skip_ids)
        cols: Dict[str, List[Any]] = {k: [] for k in
                                      ("path", "orientation", "branch", "orig_size", "image_id",
                                       "boxes", "classes")}
        too_many = 0
        for img, info in zip(self._images, self.image_infos()):
            if img["id"] in skip or info.error:
                continue
            boxes = np.full((max_boxes, 4), -1.0, np.float32)
            classes = np.full((max_boxes,), -1, np.int32)
            anns = by_image.get(img["id"], [])
            if anns:
                xywh = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
                xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
                xyxy = np.clip(xyxy, 0.0, [info.width, info.height, info.width, info.height])
                cls = np.array([a["class"] for a in anns], np.int32)
                ok = ((xyxy[:, 2] - xyxy[:, 0]) > MIN_BOX_SIDE) & (
                    (xyxy[:, 3] - xyxy[:, 1]) > MIN_BOX_SIDE)
                xyxy, cls = xyxy[ok], cls[ok]
                if len(cls) > max_boxes:
                    too_many += 1
                    keep = keep_largest(xyxy, max_boxes)
                    xyxy, cls = xyxy[keep], cls[keep]
                boxes[:len(cls)] = xyxy
                classes[:len(cls)] = cls
            cols["path"].append(os.path.join(self.image_dir, img["file_name"]))
            cols["orientation"].append(info.orientation)
            cols["branch"].append(decoder_branch(info, image_size))
            cols["orig_size"].append((info.height, info.width))
            cols["image_id"].append(img["id"])
            cols["boxes"].append(boxes)
            cols["classes"].append(classes)
        if too_many:
            warnings.warn(f"{self.annotation_file}: {too_many} image(s) have more than "
                          f"max_boxes={max_boxes} boxes; the largest {max_boxes} are kept",
                          stacklevel=3)
        if not cols["path"]:
            raise DataError(f"{self.annotation_file}: no usable image")
        dtypes = {"path": np.str_, "orientation": np.int32, "branch": np.int32,
                  "orig_size": np.int32, "image_id": np.int64, "boxes": np.float32,
                  "classes": np.int32}
        return {k: np.asarray(v, dtype=dtypes[k]) for k, v in cols.items()}

    def dataset(self, image_size: int, max_boxes: int, *, shuffle: bool = False, seed: int = 0,
                repeat: bool = False, on_corrupt: str = "fail",
                with_meta: bool = False) -> tf.data.Dataset:
        """Unbatched examples: `images`, `boxes`, `classes`, `dataset_id` (+ meta keys).

        Validates the dataset first (once; results are cached).

        Args:
            image_size: side `S` of the square model input.
            max_boxes: rows of `boxes`/`classes` (padded with -1; the largest kept).
            shuffle: shuffle the images (reshuffled every epoch).
            seed: shuffle seed.
            repeat: repeat forever.
            on_corrupt: "fail" raises on a corrupt image; "skip" leaves it out and prints
                the count.
            with_meta: add `image_id`, `scale`, `pad`, `orig_size`.

        Returns:
            A `tf.data.Dataset` of dicts of tensors.

        Raises:
            DataError: the dataset has problems (all listed).
        """
        skip_ids = self.check(on_corrupt)
        if skip_ids:
            print(f"{self.name}: skipped {len(skip_ids)} corrupt image(s) of "
                  f"{len(self.image_ids)} in {self.annotation_file}")
        table = self._examples(image_size, max_boxes, skip_ids)
        dataset_id = tf.constant(self.dataset_id, tf.int32)

        def labels(row: Dict[str, tf.Tensor], scale_xy: tf.Tensor,
                   pad_xy: tf.Tensor) -> Dict[str, tf.Tensor]:
            return {"boxes": transform_boxes(row["boxes"], scale_xy, pad_xy),
                    "classes": row["classes"], "dataset_id": dataset_id}

        return slice_dataset(table, image_size, labels, with_meta=with_meta, shuffle=shuffle,
                             seed=seed, repeat=repeat)
