"""Run folders: create, resume or refuse; load a finished run for evaluation and export."""
import csv
import json
import os
import shutil
from typing import Any, Dict, Tuple

import keras
import yaml

from effdet_tf.config import ExperimentConfig, config_to_dict, dump_config, load_config
from effdet_tf.errors import ConfigError
from export.io import class_files, write_class_files

CONFIG_FILE = "config.yaml"
CLASSES_FILE = "classes.json"
MODEL_FILE = "model.keras"


# (section, key, value before the key existed) of settings whose default changed when
# they were added: a saved config without the key was trained with the old value.
_LEGACY = (("model", "head_norm", "batch"), ("data", "cross_background", "false"),
           ("model", "detection_towers", "per_head"))


def _first_difference(old: Any, new: Any, path: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            diff = _first_difference(old.get(key), new.get(key), f"{path}.{key}".lstrip("."))
            if diff:
                return diff
        return ""
    return "" if old == new else f"{path}: {old!r} in the folder vs {new!r} now"


def load_run_config(cfg_file: str) -> ExperimentConfig:
    """The config a run folder was trained with (`config.yaml`).

    A run made before a setting existed was trained the old way, not with the default
    that came later: a file without `model.head_norm` reads as `batch`, one without
    `data.cross_background` as `false`, one without `model.detection_towers` as
    `per_head`.
    """
    with open(cfg_file, encoding="utf-8") as stream:
        saved = yaml.safe_load(stream) or {}
    legacy = [f"{section}.{key}={old}" for section, key, old in _LEGACY
              if key not in (saved.get(section) or {})]
    return load_config(cfg_file, legacy)


def prepare_run_dir(cfg: ExperimentConfig, *, overwrite: bool = False) -> Tuple[str, bool]:
    """Creates the run folder, or resumes one made by the same config.

    A folder holding another config is refused (never overwritten silently); a
    finished run is refused too. `overwrite=True` deletes the folder first. A new run
    folder gets `config.yaml` and a copy of each dataset's exclusion file
    (`exclude_<dataset>.txt`).

    Args:
        cfg: the experiment config.
        overwrite: start afresh even if the folder exists.

    Returns:
        `(run_dir, resuming)`.

    Raises:
        ConfigError: the folder exists and cannot be resumed.
    """
    run = cfg.run_path
    cfg_file = os.path.join(run, CONFIG_FILE)
    if os.path.exists(run) and overwrite:
        shutil.rmtree(run)
    if os.path.isdir(run) and os.listdir(run):
        if not os.path.isfile(cfg_file):
            raise ConfigError(f"{run} exists and is not a run folder (no {CONFIG_FILE}); "
                              "use --overwrite or another train.run_dir")
        old = config_to_dict(load_run_config(cfg_file))
        diff = _first_difference(old, config_to_dict(cfg))
        if diff:
            raise ConfigError(f"{run} holds a run with another config ({diff}); "
                              "use --overwrite or another train.run_dir")
        if os.path.isfile(os.path.join(run, MODEL_FILE)):
            raise ConfigError(f"{run} holds a finished run; use --overwrite to train again "
                              "or another train.run_dir")
        return run, True
    os.makedirs(run, exist_ok=True)
    with open(cfg_file, "w", encoding="utf-8") as stream:
        stream.write(dump_config(cfg))
    for dataset in cfg.data.datasets:
        if dataset.exclude:  # the list as trained on, should the file change later
            shutil.copyfile(dataset.exclude, os.path.join(run, f"exclude_{dataset.name}.txt"))
    return run, False


def backup_epochs(backup_dir: str) -> int:
    """Epochs a run's resume backup holds (0 when there is none yet).

    Keras' BackupAndRestore records them in `training_metadata.json` after the weights
    (its previous copy, which it falls back to, holds the same count until then).
    """
    meta = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.isfile(meta):
        return 0
    with open(meta, encoding="utf-8") as stream:
        return int(json.load(stream).get("epoch", 0))


def keep_log_rows(csv_path: str, epochs: int) -> None:
    """Keeps the rows of the first `epochs` epochs of a training log (`log.csv`).

    A resumed run trains again the epochs after its backup; their rows from the
    interrupted run go, so every epoch is logged once. The file is replaced whole.
    """
    if not os.path.isfile(csv_path):
        return
    with open(csv_path, encoding="utf-8", newline="") as stream:
        rows = list(csv.reader(stream))
    if not rows:
        return
    column = rows[0].index("epoch") if "epoch" in rows[0] else 0
    kept = [rows[0]] + [row for row in rows[1:] if row and int(row[column]) < epochs]
    if len(kept) == len(rows):
        return
    tmp = csv_path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as stream:
        csv.writer(stream).writerows(kept)
    os.replace(tmp, csv_path)


def write_classes(run: str, classes: Dict[str, Dict[str, Any]]) -> None:
    """Writes `classes.json` (per head: class names in output order, kind, COCO category
    ids or training label counts) and `<head>_classes.txt`, one class name a line, as
    every export folder has them."""
    with open(os.path.join(run, CLASSES_FILE), "w", encoding="utf-8") as stream:
        json.dump(classes, stream, indent=1)
    write_class_files(class_files(run, {head: entry["names"]
                                        for head, entry in classes.items()}))


def head_options(head: Any, entry: Dict[str, Any]) -> Dict[str, Any]:
    """A head's options with `class_weights: balanced` made numbers from the training counts.

    Balanced weights are `total / (C * count_c)` over the classes with training images
    (weight 1 for a class without), as scikit-learn's "balanced".
    """
    options = dict(head.options)
    if options.get("class_weights") == "balanced":
        counts = [float(c) for c in entry.get("train_counts") or []]
        if not counts or sum(counts) <= 0:
            raise ConfigError(f"head '{head.name}': class_weights: balanced needs the "
                              "training label counts of classes.json")
        present = sum(1 for c in counts if c > 0)
        options["class_weights"] = [round(sum(counts) / (present * c), 6) if c > 0 else 1.0
                                    for c in counts]
    return options


def load_run_meta(run: str) -> Tuple[ExperimentConfig, Dict[str, Dict[str, Any]]]:
    """A run's config and class table, without its model.

    Raises:
        ConfigError: the folder has no config or classes.
    """
    cfg_file = os.path.join(run, CONFIG_FILE)
    if not os.path.isfile(cfg_file):
        raise ConfigError(f"{run}: not a run folder ({CONFIG_FILE} missing)")
    cfg = load_run_config(cfg_file)
    classes_file = os.path.join(run, CLASSES_FILE)
    if not os.path.isfile(classes_file):
        raise ConfigError(f"{run}: {CLASSES_FILE} missing (the run never started training)")
    with open(classes_file, encoding="utf-8") as stream:
        return cfg, json.load(stream)


def load_run(run: str, *, weights: str = "final") -> Tuple[ExperimentConfig, keras.Model,
                                                          Dict[str, Dict[str, Any]]]:
    """Loads a run's config, detector and class table.

    `"final"` loads `model.keras`, the model at the end of training after precise BN (it
    falls back to the last checkpoint of an unfinished run). `"best"` / `"last"` rebuild
    the detector from the config and load `checkpoints/<weights>.weights.h5`.

    Args:
        run: the run folder.
        weights: "best", "last" or "final".

    Returns:
        `(config, detector, classes)`.

    Raises:
        ConfigError: the folder has no config, classes or weights.
    """
    cfg, classes = load_run_meta(run)
    model_file = os.path.join(run, MODEL_FILE)
    # The import registers MultiHeadDetector and the head classes with Keras' loader.
    import effdet_tf.detector  # pylint: disable=import-outside-toplevel,unused-import  # heavy
    if weights == "final" and os.path.isfile(model_file):
        return cfg, keras.saving.load_model(model_file), classes
    candidates = [os.path.join(run, "checkpoints", f"{name}.weights.h5")
                  for name in (weights, "last")]
    found = [c for c in candidates if os.path.isfile(c)]
    if not found:
        raise ConfigError(f"{run}: no model weights (looked for {', '.join(candidates)})")
    detector = build_model(cfg, classes)
    detector.load_weights(found[0])
    return cfg, detector, classes


def build_model(cfg: ExperimentConfig, classes: Dict[str, Dict[str, Any]], *,
                with_backbone_weights: bool = False) -> keras.Model:
    """Builds the detector a config describes: the one config -> model rule.

    Used by training, by loading a run and by export, so every setting of the `model`
    section and every head's kind and options reach all three alike.

    Args:
        cfg: the experiment config.
        classes: per-head class table (`classes.json`); its lengths give the class counts.
        with_backbone_weights: load `model.backbone_weights` (training starts from them;
            a run's own weights replace them when it is loaded).

    Returns:
        The detector.
    """
    from effdet_tf.detector import build_detector  # pylint: disable=import-outside-toplevel  # heavy
    from effdet_tf.heads import HeadSpec  # pylint: disable=import-outside-toplevel  # heavy

    heads = [HeadSpec(head.name, len(classes[head.name]["names"]), kind=head.kind,
                      options=head_options(head, classes[head.name]))
             for head in cfg.head_configs]
    return build_detector(
        heads=heads, image_size=cfg.data.image_size, backbone=cfg.model.backbone,
        freeze_backbone=cfg.model.freeze_backbone,
        backbone_weights=cfg.model.backbone_weights if with_backbone_weights else None,
        fpn_channels=cfg.model.fpn_channels, fpn_cells=cfg.model.fpn_cells,
        head_layers=cfg.model.head_layers, head_loss_weights=cfg.model.head_loss_weights,
        box_loss=cfg.model.box_loss, head_norm=cfg.model.head_norm,
        cls_loss=cfg.model.cls_loss, anchor_aspect_ratios=cfg.model.anchor_aspect_ratios,
        detection_towers=cfg.model.detection_towers)
