"""YoloV4Augment: the full chain on pixels, in tf.data and under XLA, deterministic."""
import numpy as np
import pytest
import tensorflow as tf

from data_pipelines.augment import YoloV4Augment
from tests.test_augment_common import (DATASET_IDS, SIZE, check_boxes_on_pixels,
                                       check_no_foreign_pixels, check_structure, make_batch,
                                       to_numpy)

# Strong geometry and mixing; colour neutral so the pixel checks can match colours.
NEUTRAL_COLOUR = {"mosaic": 0.7, "cutmix": 0.5, "mixup": 0.0, "hue": 0.0, "saturation": 1.0,
                  "exposure": 1.0, "flip": 0.5, "jitter": 0.3}


@pytest.fixture(name="graph_and_xla", scope="module")
def fixture_graph_and_xla():
    """The neutral-colour chain traced once as a graph and once compiled with XLA."""
    aug = YoloV4Augment(SIZE, **NEUTRAL_COLOUR, jit_compile=False)
    return tf.function(aug), tf.function(aug, jit_compile=True)


@pytest.mark.parametrize("compiled", (False, True), ids=("graph", "xla"))
def test_full_chain_boxes_on_pixels(graph_and_xla, compiled):
    """The whole chain (graph and XLA): boxes on pixels, datasets apart."""
    run = graph_and_xla[int(compiled)]
    checked = 0
    for i in range(3):
        batch = make_batch(10 + i)
        out = run(batch, tf.constant([i, 99], tf.int32))
        check_structure(batch, out)
        checked += check_boxes_on_pixels(out, min_fill=0.2)
        check_no_foreign_pixels(out)
    assert checked > 20


def test_xla_deterministic_and_close_to_graph(graph_and_xla):
    """XLA runs are deterministic and equal to the graph run for a seed."""
    graph, xla = graph_and_xla
    batch = make_batch(20)
    seed = tf.constant([4, 5], tf.int32)
    first, again = to_numpy(xla(batch, seed)), to_numpy(xla(batch, seed))
    for key, value in first.items():
        np.testing.assert_array_equal(value, again[key])
    reference = to_numpy(graph(batch, seed))
    np.testing.assert_array_equal(first["classes"], reference["classes"])
    np.testing.assert_allclose(first["boxes"], reference["boxes"], atol=1e-3)
    assert np.mean(np.abs(first["images"].astype(int) - reference["images"])) < 0.05


def test_default_chain_keeps_datasets_apart_and_is_deterministic():
    """Mosaic, CutMix, MixUp at high rates never mix datasets; seeded."""
    # Hue off (it may rotate one family into another); saturation/exposure keep hue order.
    aug = YoloV4Augment(SIZE, mosaic=1.0, cutmix=1.0, mixup=0.5, hue=0.0, jit_compile=False)
    batch = make_batch(30)
    seed = tf.constant([8, 9], tf.int32)
    first = to_numpy(aug(batch, seed))
    check_structure(batch, first)
    check_no_foreign_pixels(first)
    again = to_numpy(aug(batch, seed))
    for key, value in first.items():
        np.testing.assert_array_equal(value, again[key])
    other = to_numpy(aug(batch, tf.constant([8, 10], tf.int32)))
    assert not np.array_equal(first["images"], other["images"])


@pytest.mark.parametrize("jit_compile", (True, False))
def test_in_tf_data_after_batch_with_default_settings(jit_compile):
    """The default chain works as a tf.data map after batch, compiled or not."""
    batch = to_numpy(make_batch(40))
    aug = YoloV4Augment(SIZE, jit_compile=jit_compile)
    data = tf.data.Dataset.from_tensor_slices(batch).repeat(2).batch(8, drop_remainder=True)
    data = data.enumerate().map(
        lambda step, b: aug(b, tf.stack([tf.cast(step, tf.int32), tf.constant(3)])))
    outs = list(data)
    assert len(outs) == 2
    for out in outs:
        check_structure(make_batch(40), out)
    assert not np.array_equal(outs[0]["images"].numpy(), outs[1]["images"].numpy())


def test_too_many_boxes_keeps_max_boxes_and_drops_degenerate():
    """Overflowing boxes are cut to M; thin or outside boxes dropped."""
    batch = to_numpy(make_batch(50))
    boxes, classes = batch["boxes"].copy(), batch["classes"].copy()
    boxes[:, :] = [10.0, 10.0, 30.0, 30.0]
    classes[:, :] = 0
    boxes[:, 1] = [5.0, 5.0, 5.5, 40.0]  # too thin
    boxes[:, 2] = [-50.0, 0.0, 2.0, 20.0]  # almost all outside the image
    aug = YoloV4Augment(SIZE, mosaic=1.0, cutmix=1.0, flip=0.0, jitter=0.0, jit_compile=False)
    out = to_numpy(aug({**batch, "boxes": boxes, "classes": classes}, tf.constant([1, 1])))
    assert out["boxes"].shape == boxes.shape
    valid = out["classes"] >= 0
    width = out["boxes"][..., 2] - out["boxes"][..., 0]
    height = out["boxes"][..., 3] - out["boxes"][..., 1]
    assert np.all(width[valid] >= 2.0) and np.all(height[valid] >= 2.0)
    assert valid.sum(axis=1).max() == boxes.shape[1]


def test_mixing_switch_leaves_whole_images():
    """With mixing off (the last `close_mosaic` epochs) the compiled chain gives exactly
    what a chain without Mosaic, CutMix and MixUp gives; switched back on, it mixes."""
    batch = make_batch(40)
    seed = tf.constant([3, 7], tf.int32)
    mixing = YoloV4Augment(SIZE, mosaic=1.0, cutmix=1.0, mixup=0.5, hue=0.0)
    plain = to_numpy(YoloV4Augment(SIZE, mosaic=0.0, cutmix=0.0, mixup=0.0, hue=0.0)(
        batch, seed))
    mixed = to_numpy(mixing(batch, seed))
    mixing.set_mixing(False)
    assert not mixing.mixing
    closed = to_numpy(mixing(batch, seed))
    for key, value in plain.items():
        np.testing.assert_array_equal(closed[key], value, err_msg=key)
    assert np.any(mixed["images"] != plain["images"])
    mixing.set_mixing(True)
    np.testing.assert_array_equal(to_numpy(mixing(batch, seed))["images"], mixed["images"])


def test_datasets_kept_whole_pass_unmixed():
    """`mixed_datasets`: a dataset marked False leaves the chain as with mixing off,
    while the others mix exactly as with every dataset mixed (same seed, same draws)."""
    batch = make_batch(41)
    seed = tf.constant([5, 9], tf.int32)
    mix = {"mosaic": 1.0, "cutmix": 1.0, "mixup": 0.5, "hue": 0.0}
    plain = to_numpy(YoloV4Augment(SIZE, **{**mix, "mosaic": 0.0, "cutmix": 0.0,
                                             "mixup": 0.0})(batch, seed))
    mixed = to_numpy(YoloV4Augment(SIZE, **mix)(batch, seed))
    partial = to_numpy(YoloV4Augment(SIZE, **mix, mixed_datasets=(True, False, True))(
        batch, seed))
    whole = np.asarray(DATASET_IDS) == 1
    for key, value in plain.items():
        np.testing.assert_array_equal(partial[key][whole], value[whole], err_msg=key)
    np.testing.assert_array_equal(partial["images"][~whole], mixed["images"][~whole])
    assert np.any(partial["images"][~whole] != plain["images"][~whole])


def test_dataset_hue_shifts_each_dataset_by_its_own_range():
    """`dataset_hue`: each dataset's examples equal those of a chain with that dataset's
    range for all (same seed, same draws), and the range matters."""
    batch = make_batch(43)
    seed = tf.constant([7, 3], tf.int32)
    colour = {**NEUTRAL_COLOUR, "mosaic": 0.0, "cutmix": 0.0, "jitter": 0.0, "flip": 0.0,
              "saturation": 1.5, "exposure": 1.5}
    hues = (0.0, 0.3, 0.1)
    per_dataset = to_numpy(YoloV4Augment(SIZE, **{**colour, "hue": 0.05},
                                         dataset_hue=hues)(batch, seed))["images"]
    ids = np.asarray(DATASET_IDS)
    alone = [to_numpy(YoloV4Augment(SIZE, **{**colour, "hue": hue})(batch, seed))["images"]
             for hue in hues]
    for dataset, images in enumerate(alone):
        np.testing.assert_array_equal(per_dataset[ids == dataset], images[ids == dataset])
    assert np.any(per_dataset[ids == 1] != alone[0][ids == 1])
