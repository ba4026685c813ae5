"""Tests of the YAML config system and of the CLIs' one-line errors."""
import re
import subprocess
import sys

import pytest

from effdet_tf.config import (ExperimentConfig, config_from_dict, dump_config, load_config,
                              check_dataset_paths)
from effdet_tf.errors import ConfigError
from tests.conftest import REPO_ROOT

BASE = {"data": {"datasets": [{"name": "a", "root": "x"}, {"name": "b", "root": "y"}]}}


def test_shipped_configs_load():
    """Both shipped configs load, with one head per dataset."""
    demo = load_config(str(REPO_ROOT / "configs/demo.yaml"))
    real = load_config(str(REPO_ROOT / "configs/fruits_household.yaml"))
    assert demo.head_names == ["shapes", "signs"]
    assert real.head_names == ["fruits", "household"]
    assert real.data.image_size == 512 and real.train.epochs == 30
    assert real.model.head_norm == "group" and demo.model.head_norm == "group"
    # The schedule rule: the demo (5 epochs) never mixes images, the 30-epoch run mixes
    # in its first 20.
    assert (demo.close_mosaic_epochs, real.close_mosaic_epochs) == (5, 10)


@pytest.mark.parametrize("overrides, close", [
    (["train.epochs=10"], 5), (["train.epochs=11"], 5), (["train.epochs=30"], 10),
    (["train.epochs=300"], 10), (["train.epochs=9"], 9), (["train.epochs=1"], 1),
    (["train.epochs=10", "augment.close_mosaic=0"], 0),
    (["train.epochs=10", "augment.close_mosaic=7"], 7),
    (["train.epochs=30", "data.datasets.0.format=image_folder",
      "data.datasets.1.format=image_folder"], 10),
])
def test_close_mosaic_default_follows_the_run_length(overrides, close):
    """Null close_mosaic: with a detection head, half a run of 10+ epochs (at most 10)
    and the whole of a shorter one; image-level heads only: 10."""
    cfg = config_from_dict(BASE, overrides)
    assert cfg.augment.close_mosaic in (None, close)
    assert cfg.close_mosaic_epochs == close


def test_mix_images_reaches_the_augmenter_and_the_schedule_line():
    """`mix_images: false` keeps a dataset out of Mosaic/CutMix/MixUp, says so in the
    line `train.fit` prints, and must be a boolean."""
    # pylint: disable=import-outside-toplevel  # train.fit imports TensorFlow
    from train.fit import mixing_schedule

    cfg = config_from_dict(BASE, ["train.epochs=10", "data.datasets.1.mix_images=false"])
    assert cfg.augmenter_kwargs()["mixed_datasets"] == [True, False]
    assert mixing_schedule(cfg).endswith(
        "; b: whole images in every epoch (mix_images: false)")
    assert mixing_schedule(config_from_dict(BASE, ["train.epochs=10"])).startswith(
        "Mosaic/CutMix/MixUp in epochs 1-5 of 10")
    none = config_from_dict(BASE, ["data.datasets.0.mix_images=false",
                                   "data.datasets.1.mix_images=false"])
    assert mixing_schedule(none) == "off (every dataset is kept whole: a, b: mix_images: false)"
    with pytest.raises(ConfigError, match="mix_images"):
        config_from_dict(BASE, ["data.datasets.0.mix_images=3"])


def test_dataset_hue_overrides_augment_hue():
    """A dataset's `hue` reaches the augmenter for its images only; unset everywhere, the
    augmenter gets one range; out of [0, 0.5] is a one-line error naming the key."""
    assert config_from_dict(BASE).augmenter_kwargs()["dataset_hue"] is None
    cfg = config_from_dict(BASE, ["augment.hue=0.02", "data.datasets.1.hue=0.1"])
    assert cfg.dataset_hues == [0.02, 0.1]
    assert cfg.augmenter_kwargs()["dataset_hue"] == [0.02, 0.1]
    # pylint: disable-next=import-outside-toplevel  # train.fit imports TensorFlow
    from train.fit import hue_shifts
    assert hue_shifts(cfg) == "a 0.02 (augment.hue), b 0.1"
    assert hue_shifts(config_from_dict(BASE)) == ""
    shipped = load_config(str(REPO_ROOT / "configs/all_tasks.yaml"))
    assert shipped.dataset_hues == [0.015, 0.015, 0.1, 0.1]  # fruits, household: augment.hue
    for override, key in (("data.datasets.1.hue=0.7", "data.datasets[1].hue"),
                          ("augment.hue=-0.1", "augment.hue")):
        with pytest.raises(ConfigError, match=rf"{re.escape(key)}: -?0.\d is not in"):
            config_from_dict(BASE, [override])


@pytest.mark.parametrize("overrides, mixed", [
    ([], [True, True]),
    (["data.datasets.1.format=image_folder"], [True, False]),
    (["data.datasets.1.format=image_folder", "data.datasets.1.mix_images=true"], [True, True]),
    (["data.datasets.0.format=image_folder", "data.datasets.1.format=image_folder"],
     [True, True]),
])
def test_image_level_datasets_kept_whole_beside_detection_by_default(overrides, mixed):
    """Null `mix_images`: a dataset of image-level heads only is kept whole in a model
    with a detection head (and the schedule line says why); set, it wins; a model of
    image-level heads only leaves mixing to `close_mosaic`."""
    # pylint: disable=import-outside-toplevel  # train.fit imports TensorFlow
    from train.fit import mixing_schedule

    cfg = config_from_dict(BASE, ["train.epochs=30", *overrides])
    assert cfg.mixed_datasets == mixed == cfg.augmenter_kwargs()["mixed_datasets"]
    kept = "; b: whole images in every epoch (image-level heads only, the default)"
    assert mixing_schedule(cfg).endswith(kept) != all(mixed)


def test_overrides_types_and_lists():
    """`--set` values are parsed as YAML, reach nested lists and are type-checked."""
    cfg = config_from_dict(BASE, ["train.epochs=3", "data.datasets.1.root=/z",
                                  "train.learning_rate=1e-3", "model.head_loss_weights={a: 2}",
                                  "train.steps_per_epoch=null", "data.datasets.0.weight=2"])
    assert cfg.train.epochs == 3 and cfg.data.datasets[1].root == "/z"
    assert cfg.train.learning_rate == pytest.approx(1e-3)
    assert cfg.model.head_loss_weights == {"a": 2.0}
    # A dataset's share follows its image count, scaled by its weight.
    assert cfg.data.sampling_weights([300, 100]) == [600.0, 100.0]
    # Square-root ("temperature") sampling: 400 and 100 images share 2:1, not 4:1.
    sqrt = config_from_dict(BASE, ["data.sampling_power=0.5"])
    assert sqrt.data.sampling_weights([400, 100]) == pytest.approx([20.0, 10.0])
    equal = config_from_dict(BASE, ["data.sampling_power=0"])
    assert equal.data.sampling_weights([400, 100]) == pytest.approx([1.0, 1.0])


@pytest.mark.parametrize("override, message", [
    ("train.epoch=3", "unknown key 'train.epoch'"),
    ("train.epochs=three", "train.epochs: expected int, got str"),
    ("train.mixed_precision=1", "train.mixed_precision: expected bool"),
    ("model.box_loss=l1", "model.box_loss: 'l1' is not one of huber, ciou"),
    ("model.cls_loss=qfl", "model.cls_loss: 'qfl' is not one of focal, varifocal"),
    ("train.assigner=simota", "train.assigner: 'simota' is not one of iou, atss, tal"),
    ("data.image_size=500", "multiple of 128"),
    ("data.sampling_power=1.5", "data.sampling_power: 1.5 is not in [0, 1]"),
    ("model.head_loss_weights={c: 1}", "model.head_loss_weights: 'c' is not a head"),
    ("data.datasets.0.name=3a", "data.datasets[0].name: '3a' must start with a letter"),
    ("data.datasets.0.format=voc", "data.datasets[0].format: 'voc' is not one of coco"),
    ("data.datasets.5.root=q", "'5' is not an index"),
    ("noequals", "expected key=value"),
])
def test_bad_values_name_the_key(override, message):
    """Each bad value is a ConfigError naming the source and the key."""
    with pytest.raises(ConfigError, match="cfg.yaml") as err:
        config_from_dict(BASE, [override], source="cfg.yaml")
    assert message in str(err.value)


def test_duplicate_dataset_names():
    """Two datasets with one name would give two heads of one name."""
    with pytest.raises(ConfigError, match="unique"):
        config_from_dict({"data": {"datasets": [{"name": "a", "root": "x"}] * 2}})


def test_dump_round_trip(tmp_path):
    """A dumped config loads back to an equal config."""
    cfg = config_from_dict(BASE, ["train.epochs=7"])
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg), encoding="utf-8")
    assert load_config(str(path)) == cfg
    assert isinstance(cfg, ExperimentConfig)


def test_missing_dataset_path(tmp_path):
    """A missing dataset folder names the dataset, the folder and the real key to set."""
    (tmp_path / "yes").mkdir()
    cfg = config_from_dict({"data": {"datasets": [{"name": "a", "root": str(tmp_path / "yes")},
                                                  {"name": "b", "root": str(tmp_path / "no")}]}})
    with pytest.raises(ConfigError, match=r"dataset 'b': folder .*no does not exist "
                                          r"\(set data\.datasets\.1\.root\)"):
        check_dataset_paths(cfg, splits=())
    with pytest.raises(ConfigError, match=r"dataset 'a': annotation file .* does not exist"):
        check_dataset_paths(cfg)


@pytest.mark.parametrize("content, args, message", [
    (None, [], "config file does not exist"),
    ("data: [unclosed\n", [], "YAML syntax error at line"),
    ("bogus: 1\n", [], "unknown key 'bogus'"),
    ("data:\n  datasets:\n    - {name: a, root: /nonexistent/a}\n", [],
     "dataset 'a': folder /nonexistent/a does not exist"),
])
def test_fit_cli_bad_input_is_one_line_exit_2(tmp_path, content, args, message):
    """train.fit reports a bad config in one line on stderr with exit code 2."""
    path = tmp_path / "cfg.yaml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "train.fit", "--config", str(path), *args,
                           "--set", f"train.run_dir={tmp_path}/run"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert str(path) in lines[0] or "dataset 'a'" in lines[0]
    assert "Traceback" not in proc.stderr


def test_default_learning_rate_follows_the_heads_and_optimizer():
    """null picks 0.002 (AdamW) with detection heads only, 0.0007 with an image-level head
    (alone or beside detection heads)."""
    tags = load_config(str(REPO_ROOT / "configs/clothing_tags.yaml"))
    assert tags.learning_rate == pytest.approx(7e-4)
    assert load_config(str(REPO_ROOT / "configs/all_tasks.yaml")).learning_rate == \
        pytest.approx(7e-4)
    assert load_config(str(REPO_ROOT / "configs/fruits_household.yaml")).learning_rate == \
        pytest.approx(2e-3)
    assert config_from_dict(BASE).learning_rate == pytest.approx(2e-3)
    assert config_from_dict(BASE, ["train.optimizer=sgd", "train.batch_size=32"]) \
        .learning_rate == pytest.approx(0.04)
    assert load_config(str(REPO_ROOT / "configs/clothing_tags.yaml"),
                       ["train.learning_rate=0.01"]).learning_rate == pytest.approx(0.01)


HEADS = {"heads": [{"name": "objects", "options": {"box_loss_weight": 20}}],
         "data": {"datasets": [{"name": "a", "root": "x", "heads": ["objects"]},
                               {"name": "b", "root": "y", "heads": ["objects"]}]}}


def test_heads_section_routes_datasets_to_heads():
    """Two datasets can train one head; without `heads:` each dataset has its own."""
    cfg = config_from_dict(HEADS)
    assert cfg.head_names == ["objects"] and cfg.routes == [[1.0], [1.0]]
    assert cfg.head_datasets("objects") == [0, 1]
    assert cfg.heads[0].options == {"box_loss_weight": 20}
    legacy = config_from_dict(BASE)
    assert legacy.head_names == ["a", "b"] and legacy.routes == [[1.0, 0.0], [0.0, 1.0]]
    assert [h.kind for h in legacy.head_configs] == ["detection", "detection"]


@pytest.mark.parametrize("change, message", [
    ({"heads": [{"name": "objects", "kind": "segmentation"}]},
     "heads[0] (objects): kind 'segmentation' unknown, expected one of classification, "
     "detection, multilabel"),
    ({"heads": [{"name": "objects"}, {"name": "objects"}]}, "heads: names must be unique"),
    ({"heads": [{"name": "objects"}, {"name": "spare"}]}, "no dataset labels head 'spare'"),
    ({"heads": [{"name": "objects", "classes": []}]}, "heads[0].classes: must be unique"),
    ({"heads": [{"name": "other"}]},
     "data.datasets[0].heads: head 'objects' is not in heads (other)"),
])
def test_heads_section_errors(change, message):
    """Each mistake in the heads section is one line naming the key."""
    with pytest.raises(ConfigError) as err:
        config_from_dict({**HEADS, **change})
    assert message in str(err.value)


def test_dataset_without_heads_key_under_a_heads_section():
    """A dataset that names no head, in a config with heads, is told how to migrate."""
    values = {"heads": [{"name": "objects"}],
              "data": {"datasets": [{"name": "a", "root": "x"}]}}
    with pytest.raises(ConfigError, match=r"add `heads: \[<head>, ...\]` to it"):
        config_from_dict(values)


def test_with_heads_keeps_the_datasets_of_the_heads_kept():
    """Restricting to one head drops the other heads' datasets and loss weights."""
    cfg = config_from_dict(BASE, ["model.head_loss_weights={a: 2, b: 1}"])
    single = cfg.with_heads(["b"])
    assert single.head_names == ["b"] and [d.name for d in single.data.datasets] == ["b"]
    assert single.model.head_loss_weights == {"b": 1.0} and cfg.head_names == ["a", "b"]


def test_removed_keys_are_ignored_with_advice(capsys):
    """A run folder written before `eval.split` went still loads; the user is told once."""
    cfg = config_from_dict({**BASE, "eval": {"split": "val", "every_epochs": 0}},
                           source="old.yaml")
    assert cfg.eval.max_detections == 100
    err = capsys.readouterr().err
    assert "old.yaml: eval.split is ignored" in err and "eval.every_epochs is ignored" in err


def test_jit_and_precision_follow_the_backend():
    """Null jit_compile means XLA under JAX (un-jitted JAX is op by op), a TF graph under
    TensorFlow; an explicit value wins. Mixed precision is bfloat16 under JAX only."""
    from train.fit import jit_setting, precision_policy  # pylint: disable=import-outside-toplevel
    cfg = config_from_dict(BASE)
    assert cfg.train.jit_compile is None
    assert jit_setting(cfg, "jax") is True
    assert jit_setting(cfg, "tensorflow") is False
    forced = config_from_dict({**BASE, "train": {"jit_compile": False}})
    assert jit_setting(forced, "jax") is False
    assert precision_policy("jax") == "mixed_bfloat16"
    assert precision_policy("tensorflow") == "mixed_float16"
