"""Synthetic batches of solid rectangles and on-pixel box checks, shared by augment tests.

Each dataset has its own colour family (dataset 0 red, 1 blue, 2 green): a flat
background and one solid colour per class. Rectangles never overlap, so every box of a
batch can be checked against the pixels of its class colour.
"""
import numpy as np
import tensorflow as tf

SIZE = 96
MAX_BOXES = 6
# dataset -> (background, class colours); the family's channel dominates every colour.
PALETTE = {
    0: ((110, 30, 30), ((255, 0, 0), (230, 110, 0), (200, 0, 110))),
    1: ((30, 30, 110), ((0, 0, 255), (0, 110, 230), (110, 0, 200))),
    2: ((30, 110, 30), ((0, 255, 0), (110, 230, 0), (0, 200, 110))),
}
DOMINANT = {0: 0, 1: 2, 2: 1}
DATASET_IDS = (0, 0, 0, 0, 1, 1, 1, 2)
COLOUR_TOLERANCE = 30


def _place(rng, taken, size):
    """A random integer rectangle not overlapping (with a 4 px gap) those in ``taken``."""
    for _ in range(100):
        w, h = rng.integers(size // 6, size // 2.5, size=2)
        x1, y1 = rng.integers(1, size - w - 1), rng.integers(1, size - h - 1)
        box = (x1, y1, x1 + w, y1 + h)
        if all(box[2] + 4 <= o[0] or o[2] + 4 <= box[0] or box[3] + 4 <= o[1]
               or o[3] + 4 <= box[1] for o in taken):
            return box
    return None


def make_batch(seed=0, dataset_ids=DATASET_IDS, size=SIZE, max_boxes=MAX_BOXES):
    """Builds a raw batch: one or two non-overlapping class-coloured rectangles each."""
    rng = np.random.default_rng(seed)
    count = len(dataset_ids)
    images = np.zeros((count, size, size, 3), np.uint8)
    boxes = -np.ones((count, max_boxes, 4), np.float32)
    classes = -np.ones((count, max_boxes), np.int32)
    for i, dataset in enumerate(dataset_ids):
        background, colours = PALETTE[dataset]
        images[i] = background
        taken = []
        for j, cls in enumerate(rng.permutation(3)[:rng.integers(1, 3)]):
            box = _place(rng, taken, size)
            if box is None:
                break
            taken.append(box)
            images[i, box[1]:box[3], box[0]:box[2]] = colours[cls]
            boxes[i, j] = box
            classes[i, j] = cls
    return {"images": tf.constant(images), "boxes": tf.constant(boxes),
            "classes": tf.constant(classes),
            "dataset_id": tf.constant(np.asarray(dataset_ids, np.int32))}


def to_numpy(batch):
    """The batch as a dict of numpy arrays."""
    return {key: np.asarray(value) for key, value in batch.items()}


def check_structure(batch, out):
    """Same keys, shapes and dtypes; valid rows first, -1 padding after."""
    assert set(out) == set(batch)
    for key, value in batch.items():
        assert out[key].shape == value.shape, key
        assert out[key].dtype == value.dtype, key
    out = to_numpy(out)
    valid = out["classes"] >= 0
    # Valid rows form a prefix.
    assert np.all(np.diff(valid.astype(int), axis=1) <= 0)
    assert np.all(out["boxes"][~valid] == -1)
    np.testing.assert_array_equal(out["dataset_id"], np.asarray(batch["dataset_id"]))


def _foreign_pixels(image, dataset):
    """Pixels where another channel dominates the dataset's own (other colour family)."""
    own = DOMINANT[dataset]
    pixels = image.astype(int)
    others = np.delete(pixels, own, axis=-1).max(axis=-1)
    return others > pixels[..., own] + 5


def check_no_foreign_pixels(out):
    """No pixel of an example belongs to another dataset's colour family."""
    out = to_numpy(out)
    for image, dataset in zip(out["images"], out["dataset_id"]):
        assert not _foreign_pixels(image, int(dataset)).any(), f"dataset {dataset}"


def _matches(image, colour):
    return np.all(np.abs(image.astype(int) - np.asarray(colour)) <= COLOUR_TOLERANCE, axis=-1)


def _outside_strips(box, size, tol):
    """Index slices of the 2 px strips just beyond each side (from ``tol`` out), along
    the side's length less 1 px at each end.

    Sides at integer coordinates are left out: there the box was clipped (image border,
    mosaic tile edge and CutMix rectangle are all integers), and the neighbouring region
    may legitimately continue the colour (a dropped part of the same object, the same
    partner again in the next tile). A mapped object edge is almost never an integer.
    """
    lo_x, hi_x, lo_y, hi_y = _inside(box, size, -1.0)
    out = _inside(box, size, tol + 2)
    near = _inside(box, size, tol)
    strips = [(slice(out[2], near[2]), slice(lo_x, hi_x)),   # above
              (slice(near[3], out[3]), slice(lo_x, hi_x)),   # below
              (slice(lo_y, hi_y), slice(out[0], near[0])),   # left
              (slice(lo_y, hi_y), slice(near[1], out[1]))]   # right
    sides = (box[1], box[3], box[0], box[2])
    return [strip for strip, side in zip(strips, sides) if abs(side - round(side)) > 1e-3]


def _inside(box, size, margin):
    """Pixel index ranges whose centres lie within ``box`` grown by ``margin``."""
    x1, y1, x2, y2 = box
    lo_x = int(np.clip(np.ceil(x1 - margin - 0.5), 0, size))
    hi_x = int(np.clip(np.floor(x2 + margin - 0.5) + 1, 0, size))
    lo_y = int(np.clip(np.ceil(y1 - margin - 0.5), 0, size))
    hi_y = int(np.clip(np.floor(y2 + margin - 0.5) + 1, 0, size))
    return lo_x, hi_x, lo_y, hi_y


def _check_box(image, box, cls, others, *, colour, min_fill, tol, min_box_size):
    """The on-pixel checks of one box (see :func:`check_boxes_on_pixels`)."""
    size = image.shape[0]
    x1, y1, x2, y2 = box
    assert x2 - x1 >= min_box_size and y2 - y1 >= min_box_size, box
    assert x1 >= 0 and y1 >= 0 and x2 <= size and y2 <= size, box
    match = _matches(image, colour)
    # Fill measured 1 px in from the edges (resampling blends the border pixels).
    lo_x, hi_x, lo_y, hi_y = _inside(box, size, -1.0)
    inner = match[lo_y:hi_y, lo_x:hi_x]
    if min(x2 - x1, y2 - y1) >= 6:
        assert inner.mean() >= min_fill, (box, cls, inner.mean())
    lo_x, hi_x, lo_y, hi_y = _inside(box, size, tol)
    ys, xs = np.nonzero(match[lo_y:hi_y, lo_x:hi_x])
    assert len(xs) > 0, (box, cls)
    found = (xs.min() + lo_x, ys.min() + lo_y, xs.max() + lo_x + 1, ys.max() + lo_y + 1)
    assert np.allclose(found, box, atol=tol + 0.5), (box, found, cls)
    explained = np.zeros_like(match)
    for other in others:
        o_x1, o_x2, o_y1, o_y2 = _inside(other, size, tol)
        explained[o_y1:o_y2, o_x1:o_x2] = True
    for strip in _outside_strips(box, size, tol):
        spill = match[strip] & ~explained[strip]
        assert spill.size == 0 or spill.mean() < 0.5, (box, cls, "colour beyond the box")


def check_boxes_on_pixels(out, *, min_fill=0.75, tol=2.0, min_box_size=2.0):
    """Every box frames a region of its class colour, checked on the pixels.

    For each box: positive size of at least ``min_box_size``; at least ``min_fill`` of
    the pixels inside (1 px in from the edges) are its class colour (of its example's
    dataset); the bounding box of those pixels within the box grown by ``tol`` matches
    the box within ``tol`` (the box is not too big); and beyond each side (``tol`` to
    ``tol + 2`` px out) less than half of the strip has that colour, not counting other
    boxes of the same class there (the box is not too small; a same-class neighbour, e.g.
    the same partner in the next mosaic tile, or a dropped sliver of a partner may touch
    it).

    Returns:
        The number of boxes checked.
    """
    out = to_numpy(out)
    checked = 0
    for image, boxes, classes, dataset in zip(out["images"], out["boxes"], out["classes"],
                                              out["dataset_id"]):
        colours = PALETTE[int(dataset)][1]
        for i, (box, cls) in enumerate(zip(boxes, classes)):
            if cls < 0:
                continue
            assert 0 <= cls < len(colours)
            others = (classes == cls) & (np.arange(len(classes)) != i)
            _check_box(image, box, cls, boxes[others], colour=colours[cls],
                       min_fill=min_fill, tol=tol, min_box_size=min_box_size)
            checked += 1
    return checked
