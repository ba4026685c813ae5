"""TFDS detection datasets (`objects/bbox` + `objects/label`, e.g. voc) as raw-batch examples."""
import warnings
from typing import Any, Dict, List, Optional

import tensorflow as tf

try:
    import tensorflow_datasets as tfds
except ImportError as _err:  # an optional dependency: say how to get it
    raise ImportError("data_pipelines.tfds_source needs tensorflow-datasets: "
                      "pip install -e '.[tfds]'") from _err

from data_pipelines.decode import letterbox, transform_boxes


def _warn_too_many(max_boxes: int, name: str) -> None:
    warnings.warn(f"{name}: an image has more than max_boxes={max_boxes} boxes; "
                  "the largest are kept", stacklevel=2)


def _to_rgb(image: tf.Tensor) -> tf.Tensor:
    """A decoded TFDS image as uint8 RGB `[H, W, 3]` (greyscale tiled, alpha dropped)."""
    image = tf.image.convert_image_dtype(image, tf.uint8)
    channels = image.shape[-1]
    if channels == 1:
        image = tf.tile(image, [1, 1, 3])
    elif channels != 3:
        image = image[..., :3]
    return tf.ensure_shape(image, [None, None, 3])


class TfdsSource:
    """A split of a TFDS detection dataset, served like `CocoSource.dataset`.

    Boxes come from `objects/bbox` (normalised `[ymin, xmin, ymax, xmax]`), classes from
    `objects/label` (when their lengths differ, the shorter one wins); class names are the
    builder's label names, and `category_ids` are the label indices. `image_id` is the
    example's position in the split.

    Args:
        name: TFDS name, e.g. "voc/2007".
        split: TFDS split, e.g. "train".
        data_dir: TFDS data folder (TFDS default when None).
        dataset_id: index of the dataset, carried by every example.
        builder: a ready `tfds` builder (built from `name` when None).

    Example:
        >>> src = TfdsSource("voc/2007", split="train")
        >>> ds = src.dataset(512, 100, shuffle=True, repeat=True)
    """

    def __init__(self, name: str, *, split: str, data_dir: Optional[str] = None,
                 dataset_id: int = 0, builder: Any = None):
        self.name = name
        self.split = split
        self.dataset_id = int(dataset_id)
        self.builder = builder if builder is not None else tfds.builder(name, data_dir=data_dir)
        label = self.builder.info.features["objects"]["label"]
        self.class_names: List[str] = list(label.names)
        self.category_ids: List[int] = list(range(len(self.class_names)))
        self._warned = False

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def _warn_once(self, max_boxes: int) -> None:
        if not self._warned:
            self._warned = True
            _warn_too_many(max_boxes, self.name)

    def _pad_objects(self, boxes: tf.Tensor, classes: tf.Tensor,
                     max_boxes: int) -> Dict[str, tf.Tensor]:
        """Keeps the largest `max_boxes` boxes and pads to `max_boxes` with -1."""
        count = tf.shape(classes)[0]
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

        def largest():
            tf.py_function(lambda: self._warn_once(max_boxes), [], [])
            keep = tf.sort(tf.math.top_k(area, k=max_boxes).indices)
            return tf.gather(boxes, keep), tf.gather(classes, keep)

        boxes, classes = tf.cond(count > max_boxes, largest, lambda: (boxes, classes))
        n = tf.shape(classes)[0]
        boxes = tf.pad(boxes, [[0, max_boxes - n], [0, 0]], constant_values=-1.0)
        classes = tf.pad(classes, [[0, max_boxes - n]], constant_values=-1)
        return {"boxes": tf.ensure_shape(boxes, [max_boxes, 4]),
                "classes": tf.ensure_shape(classes, [max_boxes])}

    def dataset(self, image_size: int, max_boxes: int, *, shuffle: bool = False, seed: int = 0,
                repeat: bool = False, on_corrupt: str = "fail",
                with_meta: bool = False) -> tf.data.Dataset:
        """Unbatched examples with the keys of `CocoSource.dataset`.

        Args:
            image_size: side `S` of the square model input.
            max_boxes: rows of `boxes`/`classes` (padded with -1).
            shuffle: shuffle the examples (buffer of 1024, reshuffled every epoch).
            seed: shuffle seed.
            repeat: repeat forever.
            on_corrupt: "skip" drops examples whose image fails to decode; "fail" raises.
            with_meta: add `image_id`, `scale`, `pad`, `orig_size`.

        Returns:
            A `tf.data.Dataset` of dicts of tensors.

        """
        ds = self.builder.as_dataset(split=self.split, shuffle_files=False)
        ds = ds.enumerate()
        if shuffle:
            ds = ds.shuffle(1024, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        dataset_id = tf.constant(self.dataset_id, tf.int32)

        def load(index: tf.Tensor, ex: Dict[str, Any]) -> Dict[str, tf.Tensor]:
            image = _to_rgb(ex["image"])
            orig_hw = tf.shape(image)[:2]
            size = tf.cast(tf.tile(tf.reverse(orig_hw, [0]), [2]), tf.float32)
            bbox = tf.reshape(tf.cast(ex["objects"]["bbox"], tf.float32), [-1, 4])
            label = tf.cast(ex["objects"]["label"], tf.int32)
            count = tf.minimum(tf.shape(bbox)[0], tf.shape(label)[0])
            bbox, label = bbox[:count], label[:count]
            xyxy = tf.concat([tf.minimum(bbox[:, 1::-1], bbox[:, 3:1:-1]),
                              tf.maximum(bbox[:, 1::-1], bbox[:, 3:1:-1])], axis=1)
            objects = self._pad_objects(tf.clip_by_value(xyxy, 0.0, 1.0) * size, label,
                                        max_boxes)
            image, scale_xy, pad_xy = letterbox(image, orig_hw, image_size)
            out = {"images": image,
                   "boxes": transform_boxes(objects["boxes"], scale_xy, pad_xy),
                   "classes": objects["classes"], "dataset_id": dataset_id}
            if with_meta:
                out.update(image_id=index, scale=scale_xy[0], pad=pad_xy, orig_size=orig_hw)
            return out

        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if on_corrupt == "skip":
            ds = ds.ignore_errors()
        return ds
