"""What the augmentations do to image-level labels (classification and multi-label targets).

Boxes move with the pixels; an image-level label describes the whole image, so an
augmentation that builds one image from several must say how their labels combine.
Each augmentation of this package declares it in `LABEL_EFFECTS`:

- "keep": the image still shows what it showed (flip, jitter, HSV);
- "area": the image is made of parts of several images, each label weighted by the
  fraction of the frame its image covers (Mosaic, CutMix);
- "blend": images are blended, labels with the same weights (MixUp).

A label is known in the result only where it is known in every image that shows in it:
the masks multiply. Label keys are those of `effdet_tf.batch_schema` that start with
`labels/` (float32 `[B, C]`, one-hot or multi-hot) and `label_mask/` (float32 `[B, C]`).
"""
from typing import Dict, Sequence

import tensorflow as tf

from effdet_tf import batch_schema as schema

LABEL_EFFECTS = {
    "mosaic": "area",
    "cutmix": "area",
    "mixup": "blend",
    "jitter": "keep",
    "flip": "keep",
    "hsv": "keep",
}


def label_keys(batch: Dict[str, tf.Tensor]) -> list:
    """The image-level label and label-mask keys of a batch, sorted."""
    return sorted(k for k in batch if schema.is_image_label_key(k))


def mix_labels(batch: Dict[str, tf.Tensor], sources: tf.Tensor,
               weights: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Image-level labels of images made from several examples of the batch.

    Args:
        batch: the raw batch before the mix (other keys are ignored).
        sources: int32 `[B, K]`, the examples each new image is made of.
        weights: float32 `[B, K]`, the fraction of the new image each part covers (or its
            blend weight); rows sum to 1, a part with weight 0 does not show.

    Returns:
        `{key: [B, C]}` for every label key: labels `sum_k weight_k * label[source_k]`,
        masks the product of the masks of the parts that show.
    """
    mixed = {}
    weights = tf.cast(weights, tf.float32)
    shows = weights > 0.0
    for key in label_keys(batch):
        parts = tf.gather(tf.cast(batch[key], tf.float32), sources)  # [B, K, C]
        if key.startswith(schema.LABEL_MASK_PREFIX):
            known = tf.where(shows[..., tf.newaxis], parts, tf.ones_like(parts))
            mixed[key] = tf.reduce_prod(known, axis=1)
        else:
            mixed[key] = tf.reduce_sum(parts * weights[..., tf.newaxis], axis=1)
    return mixed


def pair_weights(own_share: tf.Tensor) -> tf.Tensor:
    """`[B, 2]` weights of an example and its partner from the example's own share `[B]`."""
    own_share = tf.cast(own_share, tf.float32)
    return tf.stack([own_share, 1.0 - own_share], axis=-1)


def check_effects(names: Sequence[str]) -> None:
    """Raises if an augmentation has not declared what it does to image-level labels."""
    missing = [name for name in names if name not in LABEL_EFFECTS]
    if missing:
        raise ValueError(f"augmentation(s) {missing} declare no effect on image-level labels; "
                         "add them to data_pipelines.augment.labels.LABEL_EFFECTS")
