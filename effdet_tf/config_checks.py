"""The checks of an experiment config beyond its types: names, formats, the routes
between datasets and heads, the image size and value ranges (one line per problem,
naming the key)."""
from typing import TYPE_CHECKING

from effdet_tf.anchors import check_aspect_ratios, check_image_size
from effdet_tf.errors import ConfigError
from effdet_tf.names import check_kind, check_name

if TYPE_CHECKING:  # the config module imports this one
    from effdet_tf.config import ExperimentConfig

# The head kind each dataset format's labels train ("table" holds classes or tags).
FORMAT_KINDS = {"coco": "detection", "image_folder": "classification", "table": None}
FORMATS = tuple(FORMAT_KINDS)


def _check_hue(hue: "float | None", key: str) -> None:
    """A hue shift range is a fraction of the colour circle, at most half of it."""
    if hue is not None and not 0.0 <= hue <= 0.5:
        raise ConfigError(f"{key}: {hue} is not in [0, 0.5] (a fraction of the colour circle)")


def _check_datasets(cfg: "ExperimentConfig") -> None:
    if not cfg.data.datasets:
        raise ConfigError("data.datasets: at least one dataset is needed")
    for i, dataset in enumerate(cfg.data.datasets):
        check_name(dataset.name, f"data.datasets[{i}].name")
        if dataset.format not in FORMATS:
            raise ConfigError(f"data.datasets[{i}].format: {dataset.format!r} is not one of "
                              f"{', '.join(FORMATS)}")
        if not dataset.root:
            raise ConfigError(f"data.datasets[{i}].root: empty")
        if dataset.weight <= 0:
            raise ConfigError(f"data.datasets[{i}].weight: must be > 0")
        _check_hue(dataset.hue, f"data.datasets[{i}].hue")
        if dataset.format == "table" and not dataset.table:
            raise ConfigError(f"data.datasets[{i}].table: a table dataset needs its table "
                              "file (.csv or .parquet below root)")
        if dataset.format == "table" and dataset.label_column and dataset.tag_columns:
            raise ConfigError(f"data.datasets[{i}]: set label_column (one class per image) "
                              "or tag_columns (tags), not both")
    if not 0.0 <= cfg.data.sampling_power <= 1.0:
        raise ConfigError(f"data.sampling_power: {cfg.data.sampling_power} is not in [0, 1] "
                          "(1: every image equally often, 0: every dataset equally often)")
    names = [d.name for d in cfg.data.datasets]
    if len(set(names)) != len(names):
        raise ConfigError(f"data.datasets: names must be unique, got {names}")


def _check_heads(cfg: "ExperimentConfig") -> None:
    names = cfg.head_names
    for i, head in enumerate(cfg.heads):
        check_name(head.name, f"heads[{i}].name")
        check_kind(head.kind, f"heads[{i}] ({head.name})")
        if head.classes is not None and (not head.classes
                                         or len(set(head.classes)) != len(head.classes)):
            raise ConfigError(f"heads[{i}].classes: must be unique class names, or null")
    if len(set(names)) != len(names):
        raise ConfigError(f"heads: names must be unique, got {names}")
    for i, dataset in enumerate(cfg.data.datasets):
        unknown = [h for h in cfg.dataset_heads(dataset) if h not in names]
        if unknown:
            hint = ("add `heads: [<head>, ...]` to it" if not dataset.heads
                    else "fix the name or add the head to `heads:`")
            raise ConfigError(f"data.datasets[{i}].heads: head '{unknown[0]}' is not in "
                              f"heads ({', '.join(names)}); {hint}")
    kinds = {h.name: h.kind for h in cfg.head_configs}
    for i, dataset in enumerate(cfg.data.datasets):
        heads = cfg.dataset_heads(dataset)
        kind = dataset.label_kind
        if len(heads) != 1 or kinds[heads[0]] != kind:
            got = ", ".join(f"{h} ({kinds[h]})" for h in heads)
            raise ConfigError(f"data.datasets[{i}].heads: dataset '{dataset.name}' "
                              f"({dataset.format}) trains exactly one {kind} head, got {got}")
    for head in names:
        if not cfg.head_datasets(head):
            raise ConfigError(f"heads: no dataset labels head '{head}' (list it in a "
                              "dataset's `heads:`)")
    extra = sorted(set(cfg.model.head_loss_weights or {}) - set(names))
    if extra:
        raise ConfigError(f"model.head_loss_weights: '{extra[0]}' is not a head "
                          f"(heads: {', '.join(names)})")
    if cfg.model.anchor_aspect_ratios is not None:
        check_aspect_ratios(cfg.model.anchor_aspect_ratios, "model.anchor_aspect_ratios")
    for i, head in enumerate(cfg.heads):
        if head.options.get("aspect_ratios") is not None:
            check_aspect_ratios(head.options["aspect_ratios"],
                                f"heads[{i}].options.aspect_ratios ({head.name})")


def _check_background(cfg: "ExperimentConfig") -> None:
    detection = [h.name for h in cfg.head_configs if h.kind == "detection"]
    for i, dataset in enumerate(cfg.data.datasets):
        for head in dataset.background_for or []:
            if head not in detection:
                raise ConfigError(f"data.datasets[{i}].background_for: '{head}' is not a "
                                  "detection head of this config (detection heads: "
                                  f"{', '.join(detection) or 'none'})")
            if head in cfg.dataset_heads(dataset):
                raise ConfigError(f"data.datasets[{i}].background_for: dataset "
                                  f"'{dataset.name}' labels head '{head}'; it cannot also be "
                                  "its background")


def check_config(cfg: "ExperimentConfig") -> None:
    """Checks what the types alone do not: names, formats, routes, sizes, ranges.

    Raises:
        ConfigError: the first problem, naming its key.
    """
    _check_datasets(cfg)
    _check_heads(cfg)
    _check_background(cfg)
    _check_hue(cfg.augment.hue, "augment.hue")
    try:
        check_image_size(cfg.data.image_size)
    except ConfigError as err:
        raise ConfigError(f"data.image_size: {err}") from err
    for key in ("epochs", "batch_size"):
        if getattr(cfg.train, key) <= 0:
            raise ConfigError(f"train.{key}: must be > 0")
    if not 0.0 <= cfg.train.bn_momentum < 1.0:
        raise ConfigError(f"train.bn_momentum: {cfg.train.bn_momentum} must be in [0, 1)")
    if not 0.0 <= cfg.train.warmup_max_fraction <= 1.0:
        raise ConfigError(f"train.warmup_max_fraction: {cfg.train.warmup_max_fraction} must "
                          "be in [0, 1]")
    for key in ("augment.close_mosaic", "train.precise_bn_steps", "train.refresh_bn_steps",
                "train.save_interval_s"):
        section, field = key.split(".")
        value = getattr(getattr(cfg, section), field)
        if value is not None and value < 0:
            raise ConfigError(f"{key}: must be >= 0")
