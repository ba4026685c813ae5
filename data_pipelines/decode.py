"""Image probing (PIL, once per file) and in-graph decoding and letterboxing (TensorFlow).

The Python side (`probe_image`) runs once per image, before training: it reads the size,
the format and the EXIF orientation and fully decodes the file (at reduced JPEG resolution)
to catch corrupt files. The TensorFlow side (`decode_oriented`, `letterbox`) runs inside
`tf.data` maps with no Python per example.
"""
import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf
from PIL import Image

PAD_VALUE = 114
EXIF_ORIENTATION_TAG = 0x0112
# Formats `tf.io.decode_image` reads (MPO is a multi-picture JPEG; TF reads its first frame).
TF_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP")
JPEG_FORMATS = ("JPEG", "MPO")
# Branch index of `decode_oriented` for non-JPEG files (JPEG branches are 0..3: ratio 1,2,4,8).
GENERIC_DECODER = 4
JPEG_RATIOS = (1, 2, 4, 8)


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """What one PIL pass learns about an image file.

    Attributes:
        width: width as displayed (after the EXIF orientation), or 0 when unreadable.
        height: height as displayed, or 0 when unreadable.
        orientation: EXIF orientation 1..8 (1 when absent).
        image_format: PIL format name ("JPEG", "PNG", ...), "" when unreadable.
        error: why the file cannot be used, or None.
    """

    width: int = 0
    height: int = 0
    orientation: int = 1
    image_format: str = ""
    error: Optional[str] = None


def probe_image(path: str, *, full_decode: bool = True) -> ImageInfo:
    """Reads an image's size, format and EXIF orientation with PIL, and checks it decodes.

    Args:
        path: image file.
        full_decode: also decode the pixels (JPEGs at 1/8 resolution) to find truncated
            or corrupt files.

    Returns:
        An `ImageInfo`; `error` says what is wrong when the file cannot be used.
    """
    try:
        with Image.open(path) as img:
            raw_w, raw_h = img.size
            fmt = img.format or ""
            orientation = int(img.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
            if full_decode:
                if fmt in JPEG_FORMATS:
                    img.draft("RGB", (max(1, raw_w // 8), max(1, raw_h // 8)))
                img.load()
    except FileNotFoundError:
        return ImageInfo(error="file is missing")
    except Exception as err:  # pylint: disable=broad-except  # PIL raises many types
        return ImageInfo(error=f"cannot decode image ({type(err).__name__}: {err})")
    if fmt not in TF_FORMATS:
        return ImageInfo(raw_w, raw_h, 1, fmt,
                         error=f"format {fmt} is not one TensorFlow decodes {TF_FORMATS}")
    if orientation not in range(1, 9):
        orientation = 1
    if orientation >= 5:
        raw_w, raw_h = raw_h, raw_w
    return ImageInfo(raw_w, raw_h, orientation, fmt)


def decoder_branch(info: ImageInfo, image_size: int) -> int:
    """Chooses how to decode a file: a JPEG DCT down-scaling ratio or the generic decoder.

    A JPEG much larger than the model input is decoded at 1/2, 1/4 or 1/8 of its size
    (free in libjpeg), keeping its longer side at least `image_size`.

    Args:
        info: the file's `ImageInfo`.
        image_size: model input side.

    Returns:
        Branch index for `decode_oriented`: 0..3 for JPEG ratios 1, 2, 4, 8; 4 otherwise.
    """
    if info.image_format not in JPEG_FORMATS:
        return GENERIC_DECODER
    longest = max(info.width, info.height)
    branch = 0
    for i, ratio in enumerate(JPEG_RATIOS):
        if longest // ratio >= image_size:
            branch = i
    return branch


def _apply_orientation(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Turns a decoded image upright according to its EXIF orientation (1..8)."""
    transpose = orientation >= 5
    flip_lr = tf.reduce_any(tf.equal(orientation, [2, 3, 6, 7]))
    flip_ud = tf.reduce_any(tf.equal(orientation, [3, 4, 7, 8]))
    image = tf.cond(transpose, lambda: tf.transpose(image, [1, 0, 2]), lambda: image)
    image = tf.cond(flip_lr, lambda: tf.reverse(image, [1]), lambda: image)
    image = tf.cond(flip_ud, lambda: tf.reverse(image, [0]), lambda: image)
    return image


def decode_oriented(path: tf.Tensor, orientation: tf.Tensor, branch: tf.Tensor) -> tf.Tensor:
    """Reads and decodes an image file to upright RGB uint8 `[H, W, 3]` (in graph).

    Greyscale, RGBA, palette and 16-bit files all come out as 3-channel uint8; the format
    is sniffed from the bytes, so a PNG named `.jpg` decodes correctly.

    Args:
        path: scalar string tensor, the file path.
        orientation: scalar int32 EXIF orientation (1..8).
        branch: scalar int32 from `decoder_branch`.

    Returns:
        uint8 tensor `[H, W, 3]`, possibly smaller than the file (JPEG ratios).
    """
    data = tf.io.read_file(path)

    def jpeg(ratio: int):
        return lambda: tf.io.decode_jpeg(data, channels=3, ratio=ratio)

    def generic():
        return tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)

    branches = [jpeg(r) for r in JPEG_RATIOS] + [generic]
    image = tf.switch_case(branch, branches)
    image = tf.ensure_shape(image, [None, None, 3])
    return _apply_orientation(image, orientation)


def letterbox_geometry(orig_hw: tf.Tensor,
                       image_size: int) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Scale, resized size and padding of the letterbox of an `orig_hw` image.

    Args:
        orig_hw: int32 `[2]` (height, width) of the upright original image, or `[2, N]`
            for N images at once (every result then has a trailing `N` axis).
        image_size: side `S` of the square output (aspect ratio kept, centred, padded).

    Returns:
        `(scale_xy, new_hw, pad_xy)`: float32 `[2]` scale per axis (x, y), int32 `[2]` size
        of the resized image (h, w), float32 `[2]` left and top padding (x, y).
    """
    orig = tf.cast(orig_hw, tf.float32)
    size = float(image_size)
    scale = tf.minimum(size / orig[0], size / orig[1])
    new_hw = tf.clip_by_value(tf.cast(tf.round(orig * scale), tf.int32), 1, image_size)
    pad_yx = (image_size - new_hw) // 2
    return tf.stack([scale, scale]), new_hw, tf.cast(tf.reverse(pad_yx, [0]), tf.float32)


def letterbox(image: tf.Tensor, orig_hw: tf.Tensor,
              image_size: int) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Resizes an upright image into an `S x S` uint8 frame, padded with 114.

    Args:
        image: uint8 `[h, w, 3]`, the original image or a reduced decode of it.
        orig_hw: int32 `[2]`, size of the original (boxes are in its frame).
        image_size: output side `S`.

    Returns:
        `(image, scale_xy, pad_xy)`: uint8 `[S, S, 3]`, float32 `[2]`, float32 `[2]`. A point
        `(x, y)` of the original maps to `(x * scale_x + pad_x, y * scale_y + pad_y)`.
    """
    scale_xy, new_hw, pad_xy = letterbox_geometry(orig_hw, image_size)
    resized = tf.image.resize(image, new_hw, method="bilinear")
    resized = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
    pad = tf.cast(pad_xy, tf.int32)
    paddings = [[pad[1], image_size - new_hw[0] - pad[1]],
                [pad[0], image_size - new_hw[1] - pad[0]], [0, 0]]
    out = tf.pad(resized, paddings, constant_values=PAD_VALUE)
    return tf.ensure_shape(out, [image_size, image_size, 3]), scale_xy, pad_xy


def unletterbox(boxes: Any, scale: Any, pad_xy: Any, orig_hw: Any = None) -> tf.Tensor:
    """Maps xyxy boxes of the letterboxed frame back to the original image: the inverse
    of `letterbox` (the one implementation, for evaluation, predict, export and verify).

    Args:
        boxes: `[..., 4]` xyxy in model-frame pixels.
        scale: the letterbox scale, a scalar or `[2]` (x, y) (`scale_xy`).
        pad_xy: `[2]` left and top padding.
        orig_hw: `[2]` original (height, width); boxes are clipped to it when given.

    Returns:
        float32 `[..., 4]` xyxy in original-image pixels.
    """
    scale = tf.reshape(tf.cast(scale, tf.float32), [-1])
    pad = tf.reshape(tf.cast(pad_xy, tf.float32), [2])
    scale4 = tf.tile(tf.broadcast_to(scale, [2]), [2])
    mapped = (tf.cast(boxes, tf.float32) - tf.tile(pad, [2])) / scale4
    if orig_hw is None:
        return mapped
    size_wh = tf.cast(tf.reverse(tf.reshape(orig_hw, [2]), [0]), tf.float32)
    return tf.clip_by_value(mapped, 0.0, tf.tile(size_wh, [2]))


def transform_boxes(boxes: tf.Tensor, scale_xy: tf.Tensor, pad_xy: tf.Tensor) -> tf.Tensor:
    """Maps xyxy boxes of the original frame to the model frame, keeping -1 padding rows.

    Args:
        boxes: float32 `[M, 4]` xyxy in original pixels, padding rows all -1.
        scale_xy: float32 `[2]` from `letterbox`.
        pad_xy: float32 `[2]` from `letterbox`.

    Returns:
        float32 `[M, 4]` in model-frame pixels, padding rows still -1.
    """
    valid = tf.reduce_all(boxes >= 0.0, axis=-1, keepdims=True)
    scale4 = tf.tile(scale_xy, [2])
    pad4 = tf.tile(pad_xy, [2])
    return tf.where(valid, boxes * scale4 + pad4, -tf.ones_like(boxes))


def keep_largest(boxes: np.ndarray, max_boxes: int) -> np.ndarray:
    """Indices of the `max_boxes` largest xyxy boxes, in their original order.

    Args:
        boxes: float `[n, 4]` xyxy.
        max_boxes: how many to keep.

    Returns:
        int array of kept row indices, sorted.
    """
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    order = np.argsort(-area, kind="stable")[:max_boxes]
    return np.sort(order)


def slice_dataset(table: Dict[str, Any], image_size: int,
                  labels: Callable[[Dict[str, tf.Tensor], tf.Tensor, tf.Tensor], Dict[str, Any]],
                  *, with_meta: bool, shuffle: bool, seed: int,
                  repeat: bool) -> tf.data.Dataset:
    """The examples of a source: its per-image arrays sliced, shuffled, repeated, loaded.

    Args:
        table: per-image arrays as `from_tensor_slices` takes: `path`, `orientation`,
            `branch`, `orig_size`, `image_id` and the source's label arrays.
        image_size: side `S` of the letterboxed images.
        labels: `labels(row, scale_xy, pad_xy)` -> the example's label keys.
        with_meta: add `image_id`, `scale`, `pad`, `orig_size`.
        shuffle: shuffle the images (reshuffled every epoch).
        seed: shuffle seed.
        repeat: repeat forever.

    Returns:
        The `tf.data.Dataset` of examples (`images` uint8 `[S, S, 3]` and the labels),
        loaded in parallel and in order.
    """
    def load(row: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        image = decode_oriented(row["path"], row["orientation"], row["branch"])
        image, scale_xy, pad_xy = letterbox(image, row["orig_size"], image_size)
        out = {"images": image, **labels(row, scale_xy, pad_xy)}
        if with_meta:
            out.update(image_id=row["image_id"], scale=scale_xy[0], pad=pad_xy,
                       orig_size=row["orig_size"])
        return out

    ds = tf.data.Dataset.from_tensor_slices(table)
    if shuffle:
        ds = ds.shuffle(len(table["path"]), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
