"""YOLOv4 colour augmentation in HSV (darknet ``hue``, ``saturation``, ``exposure``)."""
import tensorflow as tf

from data_pipelines.augment import rng


def rand_scale(seed: tf.Tensor, shape: tf.Tensor, scale: float) -> tf.Tensor:
    """Darknet's ``rand_scale``: a factor uniform in ``[1, s]``, inverted half of the time.

    Args:
        seed: int32 ``[2]``.
        shape: output shape.
        scale: ``s >= 1``.

    Returns:
        float32 factors in ``[1/s, s]``.
    """
    seeds = rng.split_seed(seed, 2)
    factor = rng.uniform(shape, seeds[0], 1.0, max(float(scale), 1.0))
    invert = rng.uniform(shape, seeds[1]) < 0.5
    return tf.where(invert, 1.0 / factor, factor)


def adjust_hsv(images: tf.Tensor, hue_shift: tf.Tensor, saturation_scale: tf.Tensor,
               value_scale: tf.Tensor) -> tf.Tensor:
    """Shifts hue and scales saturation and value, per example.

    Args:
        images: uint8 ``[B, H, W, 3]`` RGB.
        hue_shift: float32 ``[B]``, fraction of the hue circle.
        saturation_scale: float32 ``[B]``; the result is clipped to ``[0, 1]``.
        value_scale: float32 ``[B]`` (darknet "exposure"); clipped to ``[0, 1]``.

    Returns:
        uint8 ``[B, H, W, 3]``.
    """
    # Hue and saturation do not depend on the RGB scale: stay in 0..255 (two passes less).
    hsv = tf.image.rgb_to_hsv(tf.cast(images, tf.float32))
    hue, saturation, value = tf.unstack(hsv, axis=-1)

    def per_example(x):
        return tf.reshape(tf.cast(x, tf.float32), [-1, 1, 1])

    hue = tf.math.floormod(hue + per_example(hue_shift), 1.0)
    saturation = tf.clip_by_value(saturation * per_example(saturation_scale), 0.0, 1.0)
    value = tf.minimum(value * per_example(value_scale), 255.0)
    rgb = tf.image.hsv_to_rgb(tf.stack([hue, saturation, value], axis=-1))
    return tf.cast(tf.clip_by_value(tf.round(rgb), 0.0, 255.0), tf.uint8)


def random_hsv(images: tf.Tensor, seed: tf.Tensor, hue: float | tf.Tensor = 0.1,
               saturation: float = 1.5, exposure: float = 1.5) -> tf.Tensor:
    """Random HSV jitter as in yolov4.cfg, one draw per example.

    Args:
        images: uint8 ``[B, H, W, 3]`` RGB.
        seed: int32 ``[2]``.
        hue: hue shift uniform in ``[-hue, hue]`` (fraction of the circle); a float32
            ``[B]`` tensor gives each example its own range.
        saturation: saturation factor in ``[1/saturation, saturation]`` (darknet rand_scale).
        exposure: value factor in ``[1/exposure, exposure]``.

    Returns:
        uint8 ``[B, H, W, 3]``.
    """
    count = tf.shape(images)[:1]
    seeds = rng.split_seed(seed, 3)
    shifted = isinstance(hue, tf.Tensor) or hue
    hue_shift = rng.uniform(count, seeds[0], -hue, hue) if shifted else tf.zeros(count)
    return adjust_hsv(images, hue_shift, rand_scale(seeds[1], count, saturation),
                      rand_scale(seeds[2], count, exposure))
