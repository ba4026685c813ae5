"""The training batch, in one place: every key, its dtype, shape and "absent" value.

A raw batch (what the data pipeline yields and the on-device augmentation reads) is a
dict of these keys. Shapes use `B` (examples), `S` (image side), `M` (box rows per
image) and `H` (heads). A source that has no label of some kind fills the key with its
absent value, so sources with different label kinds share one batch structure; the
`head_mask` says which heads each example trains, so a head never learns from an
example that has no labels for it.

`split_batch` turns a raw batch into the `(images, targets)` pair of Keras'
`fit`/`evaluate`: the targets are the keys the heads read (`TaskHead.target_keys`)
plus the routing keys. Pure Python, so the model package and the TensorFlow pipelines
both import it.
"""
import dataclasses
from typing import Any, Dict, Mapping, Tuple


@dataclasses.dataclass(frozen=True)
class Field:
    """One key of the raw batch.

    Attributes:
        dtype: its dtype name.
        shape: its shape, with `B`, `S`, `M`, `H` for the batch, image side, box rows and
            heads.
        absent: the value of padding rows or of a source without this label.
        doc: what it holds.
    """

    dtype: str
    shape: Tuple[str, ...]
    absent: Any
    doc: str


IMAGES = "images"
BOXES = "boxes"
CLASSES = "classes"
DATASET_ID = "dataset_id"
HEAD_MASK = "head_mask"
BACKGROUND_MASK = "background_mask"

FIELDS: Dict[str, Field] = {
    IMAGES: Field("uint8", ("B", "S", "S", "3"), None,
                  "RGB frames letterboxed to S x S (float32 0..255 after MixUp)"),
    BOXES: Field("float32", ("B", "M", "4"), -1.0,
                 "boxes xyxy in frame pixels, valid rows first, then rows of -1"),
    CLASSES: Field("int32", ("B", "M"), -1,
                   "class index of each box row in its head's class list, -1 for padding"),
    DATASET_ID: Field("int32", ("B",), None, "index of the example's dataset in the config"),
    HEAD_MASK: Field("float32", ("B", "H"), 0.0,
                     "1 where the example's labels train the head (its dataset's routes)"),
    BACKGROUND_MASK: Field("float32", ("B", "H"), 0.0,
                           "1 where the example trains the detection head as background "
                           "only (`ExperimentConfig.background_heads`); absent when none "
                           "does"),
}

# Image-level targets, one key per head: `labels/<head>` float32 [B, C] (one-hot or
# multi-hot; all 0 where the example has none) and `label_mask/<head>` float32 [B, C]
# (1 where the label is known). The augmentation mixes them with the images
# (`data_pipelines.augment.labels`).
LABELS_PREFIX = "labels/"
LABEL_MASK_PREFIX = "label_mask/"
PATTERN_FIELDS: Dict[str, Field] = {
    LABELS_PREFIX + "<head>": Field("float32", ("B", "C"), 0.0,
                                    "image-level targets of a head, one-hot or multi-hot"),
    LABEL_MASK_PREFIX + "<head>": Field("float32", ("B", "C"), 0.0,
                                        "1 where the image-level label is known"),
}


def is_image_label_key(key: str) -> bool:
    """Whether a batch key holds image-level labels or their mask."""
    return key.startswith(LABELS_PREFIX) or key.startswith(LABEL_MASK_PREFIX)


def labels_key(head: str) -> str:
    """The batch key of a head's image-level labels."""
    return LABELS_PREFIX + head


def label_mask_key(head: str) -> str:
    """The batch key of the mask of a head's image-level labels."""
    return LABEL_MASK_PREFIX + head


# Keys the augmentation transforms (others pass through it unchanged), besides the
# image-level label keys.
AUGMENTED_KEYS = (IMAGES, BOXES, CLASSES, DATASET_ID)
# Keys every training example carries (what a source yields, before routing).
EXAMPLE_KEYS = (IMAGES, BOXES, CLASSES, DATASET_ID)
# Keys that route examples to heads; always part of the targets.
ROUTING_KEYS = (DATASET_ID, HEAD_MASK, BACKGROUND_MASK)
# What the detection heads read; the union over the registered kinds' `target_keys`.
TARGET_KEYS = (BOXES, CLASSES) + ROUTING_KEYS


def split_batch(batch: Mapping[str, Any]) -> Tuple[Any, Dict[str, Any]]:
    """Splits a raw batch into the model input and the targets of `compute_loss`.

    Args:
        batch: raw batch (`images` and the target keys; `head_mask` may be absent, see
            `effdet_tf.detector.MultiHeadDetector.compute_loss`; image-level label keys
            are targets too).

    Returns:
        `(images, targets)`.
    """
    return batch[IMAGES], {k: v for k, v in batch.items()
                           if k in TARGET_KEYS or is_image_label_key(k)}
