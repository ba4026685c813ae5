"""YOLOv4 Mosaic: four same-dataset examples tiled around a random centre.

Mosaic, darknet jitter and flip share one resampling pass (see ``geometry``): an
example that is not a mosaic is one jittered, possibly mirrored tile covering the image.
"""
import tensorflow as tf

from data_pipelines.augment import geometry, rng
from data_pipelines.augment.partners import same_dataset_partners


def random_mosaic(batch: dict, seed: tf.Tensor, prob: float = 0.5, *, jitter: float = 0.0,
                  flip: float = 0.0, centre_range: tuple[float, float] = (0.25, 0.75),
                  min_visible: float = 0.25, min_box_size: float = 2.0) -> dict:
    """Turns each example into a mosaic with probability ``prob``; jitters/flips all tiles.

    A mosaic example shows itself in a random quadrant and three partners of the same
    ``dataset_id`` in the others (partners repeat, or the example repeats itself, when
    its dataset has fewer than four examples in the batch). The split centre is uniform
    in ``centre_range * S`` on each axis; each tile is a darknet-jittered crop scaled to
    cover its quadrant, placed at a random offset and mirrored with chance ``flip``.
    Boxes are mapped, clipped to their quadrant and dropped when less than
    ``min_visible`` of them remains or a side is shorter than ``min_box_size``.

    Args:
        batch: raw batch: ``images`` uint8 ``[B, S, S, 3]``, ``boxes`` float32
            ``[B, M, 4]``, ``classes`` int32 ``[B, M]``, ``dataset_id`` int32 ``[B]``.
        seed: int32 ``[2]`` stateless seed.
        prob: chance that an example becomes a mosaic.
        jitter: darknet jitter per tile (and for non-mosaic examples).
        flip: chance of a horizontal flip per tile.
        centre_range: range of the split centre as a fraction of ``S``.
        min_visible: least visible fraction of a box.
        min_box_size: least box width and height in pixels.

    Returns:
        The augmented raw batch, same keys, shapes and dtypes.
    """
    size = float(batch["images"].shape[1])
    dataset_id = batch["dataset_id"]
    count = tf.shape(dataset_id)[0]
    seeds = rng.split_seed(seed, 5)
    partners = same_dataset_partners(dataset_id, seeds[0], 3)
    own = tf.range(count, dtype=tf.int32)[:, tf.newaxis]
    sources = tf.concat([own, partners], axis=1)
    # Put the example itself in a random quadrant.
    shift = rng.uniform([count, 1], seeds[1], 0, 4, dtype=tf.int32)
    quadrant = tf.math.floormod(tf.range(4, dtype=tf.int32)[tf.newaxis, :] + shift, 4)
    sources = tf.gather(sources, quadrant, batch_dims=1)
    is_mosaic = rng.uniform([count], seeds[2]) < prob
    sources = tf.where(is_mosaic[:, tf.newaxis], sources, own)
    low, high = centre_range
    centre = rng.uniform([2, count], seeds[3], low * size, high * size)
    centre_x = tf.where(is_mosaic, tf.round(centre[0]), size)
    centre_y = tf.where(is_mosaic, tf.round(centre[1]), size)
    return geometry.place_tiles(batch, sources, centre_x, centre_y, seeds[4], jitter=jitter,
                                flip=flip, min_visible=min_visible, min_box_size=min_box_size)
