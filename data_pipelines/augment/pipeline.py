"""YoloV4Augment: the YOLOv4 augmentation chain on raw batches (tf.data or train_step)."""
from typing import Optional, Sequence

import tensorflow as tf

from data_pipelines.augment import boxes as box_ops
from data_pipelines.augment import labels, rng
from data_pipelines.augment.color import random_hsv
from data_pipelines.augment.cutmix import random_cutmix, random_mixup
from data_pipelines.augment.mosaic import random_mosaic
from effdet_tf import batch_schema as schema

# The steps of the chain, each declared in `labels.LABEL_EFFECTS`.
STEPS = ("mosaic", "jitter", "flip", "cutmix", "mixup", "hsv")
labels.check_effects(STEPS)


class YoloV4Augment:
    """Mosaic, darknet jitter, flip, CutMix, MixUp and HSV jitter on a raw batch.

    Batched TensorFlow ops with stateless randomness: the same ``seed`` gives the same
    result, the chain runs in ``tf.data`` (``map`` after ``batch``) and inside a
    ``tf.function(jit_compile=True)`` train step. Partners for Mosaic, CutMix and MixUp
    come only from examples of the same ``dataset_id``. After each geometric step boxes
    are clipped, the degenerate or mostly hidden ones dropped, and the rest re-packed
    (valid rows first, ``-1`` padding, at most ``M``).

    Order: Mosaic/jitter/flip (one resampling pass), CutMix, MixUp, HSV.

    Every op compiles under XLA, and by default (``jit_compile=True``) the chain is always
    run as an XLA-compiled function, in eager code, in a ``tf.data`` map (XLA on the CPU
    there) and nested in a compiled train step alike: on a 2-core CPU that is about 4x
    the throughput of the same ops as a plain TensorFlow graph, which re-reads every
    intermediate image from memory. The results are identical either way for a seed
    (the random draws are made XLA-proof in ``rng``).

    Args:
        image_size: the image side ``S``.
        mosaic: chance an example becomes a mosaic of four.
        cutmix: chance an example gets a CutMix rectangle.
        mixup: chance an example is blended with another.
        hue: hue shift range (fraction of the hue circle).
        saturation: saturation factor range ``[1/s, s]``.
        exposure: value factor range ``[1/e, e]``.
        flip: chance of a horizontal flip (per example, per mosaic tile).
        jitter: darknet jitter (each side moved by up to ``jitter * S``).
        min_visible: least fraction of a box's area that must stay visible.
        min_box_size: least box width and height in pixels.
        mixed_datasets: per ``dataset_id``, whether Mosaic, CutMix and MixUp may use that
            dataset's examples; the others pass with jitter, flip and HSV only. None: all.
        dataset_hue: per ``dataset_id``, the hue shift range of that dataset's examples
            (colour tells some datasets' classes apart, not others'). None: ``hue`` for
            all.
        jit_compile: run the chain as an XLA-compiled function (False: plain TF ops).

    Example:
        >>> aug = YoloV4Augment(512)
        >>> out = aug(batch, tf.constant([1, 2], tf.int32))
    """

    # pylint: disable-next=too-many-arguments  # one keyword per setting of the chain
    def __init__(self, image_size: int, *, mosaic: float = 0.5, cutmix: float = 0.3,
                 mixup: float = 0.0, hue: float = 0.1, saturation: float = 1.5,
                 exposure: float = 1.5, flip: float = 0.5, jitter: float = 0.3,
                 min_visible: float = 0.25, min_box_size: float = 2.0,
                 mixed_datasets: Optional[Sequence[bool]] = None,
                 dataset_hue: Optional[Sequence[float]] = None, jit_compile: bool = True):
        self.image_size = int(image_size)
        self.mosaic = float(mosaic)
        self.cutmix = float(cutmix)
        self.mixup = float(mixup)
        self.hue = float(hue)
        self.saturation = float(saturation)
        self.exposure = float(exposure)
        self.flip = float(flip)
        self.jitter = float(jitter)
        self.min_visible = float(min_visible)
        self.min_box_size = float(min_box_size)
        self.mixed_datasets = (None if mixed_datasets is None
                               else [bool(mixed) for mixed in mixed_datasets])
        self.dataset_hue = (None if dataset_hue is None
                            else [float(value) for value in dataset_hue])
        self.jit_compile = bool(jit_compile)
        # Scales the Mosaic, CutMix and MixUp chances; a schedule sets it to 0 for the last
        # epochs (`set_mixing`) without retracing the compiled chain.
        self._mixing = tf.Variable(1.0, trainable=False, dtype=tf.float32,
                                   name="augment_mixing")
        self._compiled = tf.function(self.augment, jit_compile=True)

    def get_config(self) -> dict:
        """Returns the constructor arguments."""
        return {key: value for key, value in vars(self).items() if not key.startswith("_")}

    def set_mixing(self, enabled: bool) -> None:
        """Turns the image-mixing steps (Mosaic, CutMix, MixUp) on or off from now on.

        Jitter, flip and HSV stay on. Used to train the last epochs on whole, unmixed
        images (ultralytics' `close_mosaic`).

        Args:
            enabled: False to stop mixing images.
        """
        self._mixing.assign(1.0 if enabled else 0.0)

    @property
    def mixing(self) -> bool:
        """Whether Mosaic, CutMix and MixUp are on."""
        return bool(self._mixing.numpy() > 0.0)

    def __call__(self, batch: dict, seed: tf.Tensor) -> dict:
        """Augments a raw batch (see :meth:`augment`), XLA-compiled if ``jit_compile``.

        Args:
            batch: the raw batch.
            seed: int32 ``[2]`` stateless seed.

        Returns:
            A raw batch with the same keys, shapes and dtypes.
        """
        seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)
        if not self.jit_compile:
            return self.augment(batch, seed)
        # Only the augmented keys enter XLA (others, e.g. strings, may not compile).
        core = {key: batch[key]
                for key in schema.AUGMENTED_KEYS + tuple(labels.label_keys(batch))}
        return {**batch, **self._compiled(core, seed)}

    def _source_mixing(self, dataset_id: tf.Tensor) -> tf.Tensor:
        """1 for the examples whose dataset may be mixed, 0 for the others (`[B]`; a
        scalar 1 when every dataset may)."""
        if self.mixed_datasets is None or all(self.mixed_datasets):
            return tf.constant(1.0)
        table = tf.constant([1.0 if mixed else 0.0 for mixed in self.mixed_datasets])
        return tf.gather(table, tf.cast(dataset_id, tf.int32))

    def _hue(self, dataset_id: tf.Tensor) -> float | tf.Tensor:
        """The hue shift range: ``hue``, or per example its dataset's (`[B]`)."""
        if self.dataset_hue is None:
            return self.hue
        return tf.gather(tf.constant(self.dataset_hue, tf.float32),
                         tf.cast(dataset_id, tf.int32))

    def augment(self, batch: dict, seed: tf.Tensor) -> dict:
        """Augments a raw batch.

        Args:
            batch: ``images`` uint8 ``[B, S, S, 3]``, ``boxes`` float32 ``[B, M, 4]`` xyxy
                pixels (-1 padded), ``classes`` int32 ``[B, M]``, ``dataset_id`` int32
                ``[B]``; image-level labels (``labels/<head>``, ``label_mask/<head>``)
                follow the images (``data_pipelines.augment.labels``); other keys pass
                through.
            seed: int32 ``[2]`` stateless seed.

        Returns:
            A raw batch with the same keys, shapes and dtypes.
        """
        seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)
        seeds = rng.split_seed(seed, 4)
        keys = ("images", "boxes", "classes")
        out = dict(batch)
        out["boxes"], out["classes"] = box_ops.clean_boxes(
            tf.cast(batch["boxes"], tf.float32), tf.cast(batch["classes"], tf.int32),
            self.image_size, self.min_visible, self.min_box_size)
        common = {"min_visible": self.min_visible, "min_box_size": self.min_box_size}
        mixing = tf.cast(self._mixing, tf.float32) * self._source_mixing(batch["dataset_id"])
        if self.mosaic > 0.0 or self.jitter > 0.0 or self.flip > 0.0:
            out = random_mosaic(out, seeds[0], self.mosaic * mixing, jitter=self.jitter,
                                flip=self.flip, **common)
        if self.cutmix > 0.0:
            out = random_cutmix(out, seeds[1], self.cutmix * mixing, **common)
        if self.mixup > 0.0:
            out = random_mixup(out, seeds[2], self.mixup * mixing)
        if max(self.dataset_hue or [self.hue]) > 0.0 or self.saturation != 1.0 \
                or self.exposure != 1.0:
            out["images"] = random_hsv(out["images"], seeds[3], self._hue(batch["dataset_id"]),
                                       self.saturation, self.exposure)
        for key in keys + tuple(labels.label_keys(batch)):
            out[key] = tf.ensure_shape(tf.cast(out[key], batch[key].dtype), batch[key].shape)
        return out
