"""Datasets with image-level labels (one class per image, or a 0/1 value per tag) served as
`tf.data` examples of the raw batch, alongside the COCO detection sources.

`ImageLabelSource` holds what both formats share (the label arrays, validation of the image
files and the `tf.data` pipeline); `ImageFolderSource` (`data_pipelines.image_folder`) and
`TableSource` (`data_pipelines.table_source`) read the two formats into it.
"""
import math
import numbers
import os
from typing import AbstractSet, Any, Dict, List, Optional

import numpy as np
import tensorflow as tf

from effdet_tf.batch_schema import label_mask_key, labels_key
from effdet_tf.errors import DataError
from data_pipelines import validate as val
from data_pipelines.decode import ImageInfo, decoder_branch, slice_dataset
from data_pipelines.exclude import path_key

KINDS = ("classification", "multilabel")
# Image file extensions both formats accept (lower case, in the order a bare stem tries them).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def is_image_file(name: str) -> bool:
    """Whether a file name (no folder) is a visible image file: "a.JPG", not ".a.jpg"."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def more(count: int, noun: str = "rows") -> str:
    """The tail of a message naming one case of several: " (and 12 more rows)", or ""."""
    return f" (and {count} more {noun})" if count > 0 else ""


def as_text(value: Any) -> Optional[str]:
    """A table cell as text: None for a missing value; integer-valued floats lose ".0".

    Args:
        value: a cell (str, number, bool, None or NaN).

    Returns:
        The stripped text, or None for None/NaN/NA.
    """
    if value is None or (isinstance(value, numbers.Real) and not isinstance(value, bool)
                         and math.isnan(float(value))):
        return None
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
        return str(int(number)) if number.is_integer() else str(number)
    return str(value).strip()


class ImageResolver:
    """Finds the image file of a table id: a path relative to a folder, or a bare stem.

    A value whose extension is an image extension is used as is; otherwise the first file
    `<value><ext>` that exists, for `ext` in `IMAGE_EXTENSIONS` (any case); otherwise the
    value itself when it has some other extension, else `<value>.jpg`. Each folder is
    listed once, so resolving many ids is quick.

    Args:
        image_dir: the folder the values are relative to.
    """

    def __init__(self, image_dir: str):
        self.image_dir = str(image_dir)
        self._listings: Dict[str, Dict[str, Dict[str, str]]] = {}

    def _listing(self, folder: str) -> Dict[str, Dict[str, str]]:
        """`{stem: {lower-case extension: file name}}` of a folder's image files."""
        if folder not in self._listings:
            stems: Dict[str, Dict[str, str]] = {}
            try:
                names = sorted(os.listdir(os.path.join(self.image_dir, folder)))
            except OSError:
                names = []
            for name in names:
                stem, ext = os.path.splitext(name)
                found = stems.setdefault(stem, {})
                if ext.lower() in IMAGE_EXTENSIONS and (ext.islower() or ext.lower() not in found):
                    found[ext.lower()] = name
            self._listings[folder] = stems
        return self._listings[folder]

    def relative(self, value: str) -> str:
        """The image file of an id, relative to `image_dir`.

        Args:
            value: the id (a relative path or a stem).

        Returns:
            The relative path (which may not exist; the caller reports that).
        """
        value = value.replace("\\", "/")
        folder, base = os.path.split(value)
        ext = os.path.splitext(base)[1]
        if ext.lower() in IMAGE_EXTENSIONS:
            return value
        found = self._listing(folder).get(base, {})
        for candidate in IMAGE_EXTENSIONS:
            if candidate in found:
                return os.path.join(folder, found[candidate]) if folder else found[candidate]
        return value if ext else value + IMAGE_EXTENSIONS[0]

    def path(self, value: str) -> str:
        """The full path of an id's image file: `image_dir` joined with `relative(value)`."""
        return os.path.join(self.image_dir, self.relative(value))


class ImageLabelSource:
    """One split of a dataset with image-level labels for one head.

    A subclass reads its format, fills `class_names`, `ids`, `paths`, `where`, `labels`
    and `label_mask`, then calls `_finish()`. Examples carry no boxes (`boxes` and
    `classes` are all -1), so they batch with detection sources.

    Args:
        name: dataset name.
        head: the head its labels train.
        kind: "classification" (one class per image: a one-hot row, known or not) or
            "multilabel" (a 0/1 value per tag, each known or not).
        dataset_id: index of the dataset, carried by every example.
        origin: the file or folder named in messages.

    Raises:
        ValueError: `kind` is not one of `KINDS`.
    """

    def __init__(self, name: str, head: str, kind: str, dataset_id: int, origin: str):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        self.name = name
        self.head = head
        self.kind = kind
        self.dataset_id = int(dataset_id)
        self.origin = str(origin)
        self.class_names: List[str] = []
        self.ids: List[str] = []
        self.paths: List[str] = []
        self.where: List[str] = []
        self.labels = np.zeros((0, 0), np.float32)
        self.label_mask = np.zeros((0, 0), np.float32)
        self._infos: Optional[List[ImageInfo]] = None
        self.excluded = 0

    def _finish(self) -> None:
        """Checks that the per-image lists and arrays agree; casts the arrays to float32."""
        shape = (len(self.ids), len(self.class_names))
        self.labels = np.asarray(self.labels, np.float32).reshape(shape)
        self.label_mask = np.asarray(self.label_mask, np.float32).reshape(shape)
        if not len(self.paths) == len(self.where) == shape[0]:
            raise ValueError("ids, paths and where must have one entry per image")
        if len(set(self.ids)) != shape[0]:
            raise ValueError("ids must be unique")

    def drop_files(self, exclude: AbstractSet[str]) -> int:
        """Leaves out the images whose file is in `exclude` (`exclude.path_key`s).

        Args:
            exclude: keys of the files to leave out.

        Returns:
            Number of images left out.
        """
        keep = [i for i, path in enumerate(self.paths) if path_key(path) not in exclude]
        dropped = self.num_images - len(keep)
        if dropped:
            self.ids = [self.ids[i] for i in keep]
            self.paths = [self.paths[i] for i in keep]
            self.where = [self.where[i] for i in keep]
            self.labels = self.labels[keep]
            self.label_mask = self.label_mask[keep]
            self._infos = None
        return dropped

    @property
    def num_images(self) -> int:
        """Number of images (rows)."""
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        """Number of classes (or tags) of the head."""
        return len(self.class_names)

    @property
    def image_ids(self) -> List[int]:
        """The `image_id` of each image: its row index into `ids`."""
        return list(range(self.num_images))

    def label_counts(self) -> np.ndarray:
        """float32 `[C]`: known positive labels per class."""
        return (self.labels * self.label_mask).sum(axis=0).astype(np.float32)

    def known_counts(self) -> np.ndarray:
        """float32 `[C]`: known values (positive or negative) per class."""
        return self.label_mask.sum(axis=0).astype(np.float32)

    def image_infos(self) -> List[ImageInfo]:
        """Probes every image file once with PIL (size, orientation, decodability); cached."""
        if self._infos is None:
            self._infos = val.probe_all(self.paths)
        return self._infos

    def _message(self, i: int, tail: str) -> str:
        """`origin: where: file path<tail>` (the path once when `where` is the path)."""
        if self.where[i] == self.paths[i]:
            return f"{self.origin}: file {self.paths[i]}{tail}"
        return f"{self.origin}: {self.where[i]}: file {self.paths[i]}{tail}"

    def problems(self, check_images: bool = True) -> List[val.Problem]:
        """Every problem of the image files.

        Args:
            check_images: open every image file (else only check that each exists).

        Returns:
            `Problem`s: kind "error" for a missing file, "corrupt" for one that cannot be
            decoded; `image_id` is the row index.
        """
        problems = []
        if not check_images:
            for i, path in enumerate(self.paths):
                if not os.path.isfile(path):
                    problems.append(val.Problem("error", self._message(i, " is missing"), i))
            return problems
        for i, info in enumerate(self.image_infos()):
            if info.error == "file is missing":
                problems.append(val.Problem("error", self._message(i, " is missing"), i))
            elif info.error:
                problems.append(val.Problem("corrupt", self._message(i, f": {info.error}"), i))
        return problems

    def check(self, on_corrupt: str = "fail") -> List[int]:
        """Raises on any problem; with `on_corrupt="skip"` corrupt images are tolerated.

        Args:
            on_corrupt: "fail" or "skip".

        Returns:
            Row indices of the corrupt images to skip.

        Raises:
            DataError: listing every problem.
            ValueError: `on_corrupt` is not "fail" or "skip".
        """
        return val.corrupt_to_skip(self.problems(check_images=True), on_corrupt, self.origin)

    def _examples(self, image_size: int, skip_ids: List[int]) -> Dict[str, np.ndarray]:
        """Builds the per-image arrays the `tf.data` pipeline slices."""
        skip = set(skip_ids)
        keep = [i for i, info in enumerate(self.image_infos()) if i not in skip and not info.error]
        if not keep:
            raise DataError(f"{self.origin}: no usable image")
        infos = self.image_infos()
        return {
            "path": np.asarray([self.paths[i] for i in keep], np.str_),
            "orientation": np.asarray([infos[i].orientation for i in keep], np.int32),
            "branch": np.asarray([decoder_branch(infos[i], image_size) for i in keep], np.int32),
            "orig_size": np.asarray([(infos[i].height, infos[i].width) for i in keep], np.int32),
            "image_id": np.asarray(keep, np.int64),
            "labels": self.labels[keep].reshape(len(keep), self.num_classes),
            "label_mask": self.label_mask[keep].reshape(len(keep), self.num_classes),
        }

    def dataset(self, image_size: int, max_boxes: int, *, shuffle: bool = False, seed: int = 0,
                repeat: bool = False, on_corrupt: str = "fail",
                with_meta: bool = False) -> tf.data.Dataset:
        """Unbatched examples: `images`, `boxes`, `classes`, `dataset_id`, the head's
        `labels/<head>` and `label_mask/<head>` (+ meta keys).

        Validates the image files first (once; results are cached).

        Args:
            image_size: side `S` of the square model input.
            max_boxes: rows of `boxes`/`classes` (all -1: these images have no boxes).
            shuffle: shuffle the images (reshuffled every epoch).
            seed: shuffle seed.
            repeat: repeat forever.
            on_corrupt: "fail" raises on a corrupt image; "skip" leaves it out and prints
                the count.
            with_meta: add `image_id` (row index into `ids`), `scale`, `pad`, `orig_size`.

        Returns:
            A `tf.data.Dataset` of dicts of tensors.

        Raises:
            DataError: an image file is missing or (with "fail") corrupt (all listed).
        """
        skip_ids = self.check(on_corrupt)
        if skip_ids:
            print(f"{self.name}: skipped {len(skip_ids)} corrupt image(s) of "
                  f"{self.num_images} in {self.origin}")
        table = self._examples(image_size, skip_ids)
        dataset_id = tf.constant(self.dataset_id, tf.int32)
        boxes = tf.fill([max_boxes, 4], tf.constant(-1.0, tf.float32))
        classes = tf.fill([max_boxes], tf.constant(-1, tf.int32))
        key_labels, key_mask = labels_key(self.head), label_mask_key(self.head)

        def labels(row: Dict[str, tf.Tensor], scale_xy: tf.Tensor,
                   pad_xy: tf.Tensor) -> Dict[str, tf.Tensor]:
            del scale_xy, pad_xy  # image-level labels do not move with the pixels
            return {"boxes": boxes, "classes": classes, "dataset_id": dataset_id,
                    key_labels: row["labels"], key_mask: row["label_mask"]}

        return slice_dataset(table, image_size, labels, with_meta=with_meta, shuffle=shuffle,
                             seed=seed, repeat=repeat)
