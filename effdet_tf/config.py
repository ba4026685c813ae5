"""Experiment configuration: dataclasses loaded from YAML, with `--set key=value` overrides.

Every run prints its whole configuration at the start and saves it beside its outputs,
so a run folder says exactly how it was made. Values are type-checked on load: an
unknown key or a value of the wrong type is a `ConfigError` naming the file and key.

Example:
    >>> cfg = load_config("configs/demo.yaml", ["train.epochs=3"])
    >>> cfg.train.epochs
    3
"""
import copy
import dataclasses
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from effdet_tf.config_checks import FORMAT_KINDS, check_config
from effdet_tf.config_parse import build_dataclass, parse_overrides, set_path
from effdet_tf.errors import ConfigError, report_once
from effdet_tf.names import IMAGE_LEVEL_KINDS


@dataclasses.dataclass
class HeadConfig:
    """One task head on the shared backbone and BiFPN.

    Attributes:
        name: head name (a letter, then letters, digits, `_`); outputs and metrics are
            named after it.
        kind: what it predicts, a key of `effdet_tf.names.HEAD_KINDS` ("detection").
        classes: its class names in output order; null takes them from the first dataset
            that labels it (a COCO dataset's categories in ascending id order). Every
            dataset that labels the head maps its own categories onto these by name.
        options: keyword arguments of the head kind (e.g. `box_loss_weight` of a detection
            head); they are saved with the model.
    """

    name: str = ""
    kind: str = "detection"
    classes: Optional[List[str]] = None
    options: Dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class DatasetConfig:  # pylint: disable=too-many-instance-attributes  # one field per setting
    """One dataset (a source of labelled images) and the head its labels train.

    Attributes:
        name: dataset name (a letter, then letters, digits, `_`).
        format: how it is stored, and so which head kind its labels train:
            "coco" (boxes; a COCO json per split and an image folder: a detection head),
            "image_folder" (`root/<split>/<class>/*`: a classification head) or
            "table" (a CSV or parquet table and an image folder: a classification head
            with `label_column`, else a multilabel head, one 0/1 column per tag).
        heads: the head its labels train, as a one-name list; null: the head named like
            the dataset (made with the format's kind when the config has no `heads:`).
        root: dataset folder; relative paths are relative to the working directory.
        annotations: coco: the annotation file below `root`; `{split}` becomes the split.
        images: coco and table: the image folder below `root`.
        table: table: the table file below `root` (.csv, .parquet); with `{split}` in it,
            one file per split (and no split column).
        id_column: table: the column naming each image, a path below `images` or a file
            stem (`.jpg`, `.png`, ... is found).
        label_column: table: the column holding each image's class name (a
            classification head); empty: the table holds tags.
        tag_columns: table without `label_column`: the 0/1 tag columns; null: every
            numeric column but the id and split columns. Empty, NaN or -1: unknown.
        split_column: table: the column holding each row's split (train, val, test).
        weight: how often each of its training images is drawn when datasets are mixed,
            relative to the others' (1.0: every image of every dataset equally often, so
            a dataset's share of the batches is its share of the images; 2.0 doubles it).
        exclude: a text file listing images to leave out of every split, one path below
            `root` a line (`#` starts a comment), as `python -m data_pipelines.inspect`
            writes it; the files themselves are not touched. Empty: none.
        background_for: detection heads whose objects never appear in this dataset's
            images: they train those heads as background (every anchor a negative, the
            dataset's own boxes ignored), as one merged detector trained on both sets
            would see them. Null: none. Only for data that truly holds none of those
            objects: an unlabelled one is learned as background.
        mix_images: whether Mosaic, CutMix and MixUp may build training images from this
            dataset's images (always with each other: a partner comes from the same
            dataset). False: its images train whole in every epoch (jitter, flip and HSV
            only) while the other datasets' images mix. Null (the default): false for a
            dataset that trains only image-level heads in a model with a detection head
            (those heads train on whole images, as they do alone at 10 epochs, while the
            detection heads mix), true otherwise (`ExperimentConfig.mixed_datasets`).
        hue: the largest hue shift of this dataset's training images, a fraction of the
            colour circle; null (the default): `augment.hue`. Colour is a property of
            the data: keep it small where colour tells classes apart (apples from
            oranges), larger where it does not (garments; docs/results.md).
    """

    name: str = ""
    format: str = "coco"
    heads: Optional[List[str]] = None
    root: str = ""
    annotations: str = "annotations/instances_{split}.json"
    images: str = "images"
    table: str = ""
    id_column: str = "id"
    label_column: str = ""
    tag_columns: Optional[List[str]] = None
    split_column: str = "split"
    weight: float = 1.0
    exclude: str = ""
    background_for: Optional[List[str]] = None
    mix_images: Optional[bool] = None
    hue: Optional[float] = None

    def paths(self, split: str) -> Tuple[str, str]:
        """Returns `(annotation_file, image_dir)` of a split (coco)."""
        ann = os.path.join(self.root, self.annotations.format(split=split))
        return ann, os.path.join(self.root, self.images)

    def table_path(self, split: str) -> str:
        """The table file of a split (table)."""
        return os.path.join(self.root, self.table.format(split=split))

    @property
    def label_kind(self) -> str:
        """The head kind its labels train: detection, classification or multilabel."""
        if self.format == "table":
            return "classification" if self.label_column else "multilabel"
        return FORMAT_KINDS.get(self.format, "detection")


@dataclasses.dataclass
class DataConfig:
    """Input pipeline settings.

    Attributes:
        datasets: the datasets, in head order (dataset id i is served by head i).
        image_size: model input side in pixels (a multiple of 128 keeps P7 whole).
        max_boxes: boxes kept per image (padded with -1).
        one_dataset_per_batch: make every batch come from a single dataset.
        sampling_power: how mixed datasets share the batches: dataset i is drawn in
            proportion to `weight_i * images_i ** sampling_power`. 1.0: every training
            image equally often (a dataset's share is its share of the images); 0.5: in
            proportion to the square root of the image counts, so a small dataset is seen
            more often and a large one less ("temperature" sampling); 0.0: every dataset
            equally often.
        cross_background: every detection dataset's images also train every detection head
            it does not label as background (as one merged detector trained on all the
            datasets would see them), on top of each dataset's `background_for`. On by
            default: it cut the two-head model's false detections on the other dataset's
            images from 73% and 87% of the images to 1-2% and 22-28%, and raised
            household's AP; it cost the 5-epoch demo's shapes head some AP
            (docs/results.md). Set false when the
            datasets hold each other's objects (a fruit in a kitchen photo, unlabelled
            there, would be learned as background).
        on_corrupt: "fail" or "skip" for an image that cannot be decoded.
        sample_data: folder where the embedded sample datasets are generated when
            missing (the demo config uses it); empty to disable.
    """

    datasets: List[DatasetConfig] = dataclasses.field(default_factory=list)
    image_size: int = 512
    max_boxes: int = 100
    one_dataset_per_batch: bool = False
    sampling_power: float = 1.0
    cross_background: bool = True
    on_corrupt: str = "fail"
    sample_data: str = ""

    def sampling_weights(self, image_counts: Sequence[int]) -> List[float]:
        """Sampling weight of each dataset, in order: `weight * image_count ** sampling_power`."""
        return [d.weight * float(count) ** self.sampling_power
                for d, count in zip(self.datasets, image_counts)]


@dataclasses.dataclass
class AugmentConfig:
    """YOLOv4 augmentation (yolov4.cfg `[net]` values but for `hue`); probabilities per image.

    `hue`: the largest hue shift, a fraction of the colour circle. The default, 0.015
    (about 5 degrees, ultralytics' `hsv_h`), is smaller than yolov4.cfg's 0.1 (36
    degrees), which turns red into orange and orange into yellow: label noise wherever
    colour tells classes apart (apples from oranges); measured in docs/results.md. A
    dataset's own `hue` overrides it for its images.

    `close_mosaic`: the last epochs that train without Mosaic, CutMix and MixUp, on whole
    images as they are evaluated (ultralytics' rule). Null (the default) picks it from the
    run's length: with a detection head, a run of 10 epochs or more mixes in its first
    half and ends with at most 10 epochs of whole images (a 10-epoch run mixes in its
    first 5, a 30-epoch run in its first 20, a 300-epoch run in its first 290), and a
    shorter run never mixes; with image-level heads only, 10 (a run of 10 epochs or
    fewer never mixes). See
    `ExperimentConfig.close_mosaic_epochs`; measured in docs/results.md.
    """

    mosaic: float = 0.5
    cutmix: float = 0.3
    mixup: float = 0.0
    hue: float = 0.015
    saturation: float = 1.5
    exposure: float = 1.5
    flip: float = 0.5
    jitter: float = 0.3
    min_visible: float = 0.25
    min_box_size: float = 2.0
    close_mosaic: Optional[int] = None


@dataclasses.dataclass
class ModelConfig:
    """Detector architecture (EfficientDet-D0 values by default).

    `head_norm`: the normalisation in the detection heads' class and box towers: "group"
    (the default: group normalisation, one per level, each image normalised by its own
    features, so a head's output does not depend on the other images of its batch, nor
    differ between training and inference) or "batch" (EfficientDet's BN, one per level;
    run folders and model files made before the setting existed have it); measured in
    docs/results.md.

    `cls_loss`: the detection heads' class loss: "focal" (the default, EfficientDet's) or
    "varifocal" (VarifocalNet's: a positive's class score learns the IoU of its predicted
    box, so scores rank detections by how well they fit); measured in docs/results.md.

    `anchor_aspect_ratios`: the detection heads' anchor shapes, width / height, each at 3
    scales on every location of P3-P7: null is EfficientDet's `[1, 2, 0.5]` (9 anchors
    per location); `[1, 2, 0.5, 4, 0.25]` adds anchors for objects four times as tall as
    wide or as wide as tall (curtains, people standing, bottles; 15 per location). A
    head's `options: {aspect_ratios: [...]}` overrides it for that head; measured in
    docs/results.md.

    `detection_towers`: "shared" (the default: one class tower, box tower and box
    prediction conv run by every detection head, each keeping its own class prediction
    conv, so every head's boxes and tower features are learned from all detection
    datasets' images, as in one detector trained on the merged datasets:
    `effdet_tf.detection_towers`) or "per_head" (each detection head its own class and
    box towers; run folders and model files made before the setting existed have it);
    measured in docs/results.md.
    """

    backbone: str = "cspdarknet53"
    fpn_channels: int = 64
    fpn_cells: int = 3
    head_layers: int = 3
    freeze_backbone: bool = False
    backbone_weights: Optional[str] = None
    box_loss: str = "huber"
    cls_loss: str = "focal"
    head_norm: str = "group"
    head_loss_weights: Optional[Dict[str, float]] = None
    anchor_aspect_ratios: Optional[List[float]] = None
    detection_towers: str = "shared"


@dataclasses.dataclass
class TrainConfig:  # pylint: disable=too-many-instance-attributes  # one field per setting
    """Optimisation settings.

    The defaults suit short CPU runs and 30-epoch GPU runs alike (measured in
    docs/results.md): AdamW (`learning_rate: null` picks 0.002 with detection heads only,
    0.0007 with an image-level head, and EfficientDet's 0.08 * batch / 64 for SGD:
    `ExperimentConfig.learning_rate`), a warm-up of `warmup_epochs` but never more
    than `warmup_max_fraction` of the run (a tenth), cosine decay, and precise BN at the
    end (`bn_momentum` sets every trainable BN layer's momentum for training;
    EfficientDet's 0.99 by default).
    BN statistics are re-estimated from the current weights over `refresh_bn_steps`
    clean training batches before every validation (0: off), so the validation loss
    describes the model as it is; `precise_bn_steps` batches are averaged after the
    last epoch for the saved model.

    `loss_normalizer`: what each detection head's loss is divided by: "shared" (the
    default: the positives of every detection head in the batch + 1, so that a positive
    weighs the same in every head, as in one merged detector) or "per_head" (its own
    positives + 1, EfficientDet's rule applied head by head). The same with one
    detection head; measured with two in docs/results.md.

    `assigner`: how detection heads pick the anchors each box trains: "iou" (the
    default: IoU argmax, positive at IoU >= 0.5, every box also taking its best anchor,
    EfficientDet's rule) or "atss" (a threshold per box from its nearest anchors' IoUs,
    effdet_tf/atss.py) or "tal" (task alignment: the anchors inside a box whose
    predicted class probability and box fit it best, from the head's own outputs,
    effdet_tf/tal.py); measured in docs/results.md.

    `jit_compile`: null (the default) compiles the step with XLA under JAX, where Keras'
    `false` would run it as plain Python (two orders of magnitude slower), and as a
    TensorFlow graph without XLA under TensorFlow; true or false force it.
    `save_interval_s`: the resume backup (weights and optimizer state, `backup/`) and
    `checkpoints/last.weights.h5` are written at the end of an epoch when this many
    seconds have passed since they were last written, and after the last epoch; 0
    writes them every epoch. An interrupted run resumes from the backup and loses at
    most this much training (`best.weights.h5` is written whenever the validation loss
    improves, whatever the interval). 60 s keeps every epoch of a CPU run and spares a
    GPU run, whose epochs take seconds, writing about 7 x the weights' size per epoch
    (the last weights, the backup with its optimizer moments, and the previous backup).
    `mixed_precision`: bfloat16 compute under JAX (GPUs from Ampere on, TPUs), float16
    with loss scaling under TensorFlow (T4s have no bfloat16); variables stay float32.
    """

    epochs: int = 30
    batch_size: int = 16
    steps_per_epoch: Optional[int] = None
    optimizer: str = "adamw"
    learning_rate: Optional[float] = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    warmup_max_fraction: float = 0.1
    clip_norm: float = 10.0
    ema_decay: float = 0.0
    loss_normalizer: str = "shared"
    assigner: str = "iou"
    mixed_precision: bool = False
    jit_compile: Optional[bool] = None
    augment: bool = True
    augment_on_device: bool = True
    patience: int = 0
    precise_bn_steps: int = 32
    refresh_bn_steps: int = 8
    bn_momentum: float = 0.99
    save_interval_s: float = 60.0
    seed: int = 0
    run_dir: str = "runs/{name}"
    strategy: str = "default"


@dataclasses.dataclass
class EvalConfig:
    """Detection post-processing and evaluation settings (COCO practice by default: a
    score threshold of 0.001 that cuts no recall, 100 detections per image)."""

    score_threshold: float = 0.001
    iou_threshold: float = 0.5
    max_detections: int = 100
    batch_size: int = 8


@dataclasses.dataclass
class ExperimentConfig:
    """A whole experiment: heads, data, augmentation, model, training and evaluation.

    Without a `heads:` section every dataset trains one detection head named after it
    (the form of configs written before heads and datasets were separate).
    """

    name: str = "experiment"
    heads: List[HeadConfig] = dataclasses.field(default_factory=list)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

    @property
    def head_configs(self) -> List[HeadConfig]:
        """The heads in output order: the `heads:` section, or one detection head per dataset."""
        if self.heads:
            return list(self.heads)
        return [HeadConfig(name=d.name, kind=d.label_kind) for d in self.data.datasets]

    @property
    def learning_rate(self) -> float:
        """The peak learning rate: `train.learning_rate`, or the default it picks when null.

        SGD: EfficientDet's 0.08 * batch / 64. AdamW: 0.002 when every head is a
        detection head (measured on household, docs/results.md), 0.0007 when any head is
        image-level (classification, multilabel: measured on clothing, where 0.002 left
        the category head at chance for its first two epochs, and on the four-head
        model, where 0.0007 gave every head, detection heads included, more than 0.002).
        """
        if self.train.learning_rate is not None:
            return self.train.learning_rate
        if self.train.optimizer == "sgd":
            return 0.08 * self.train.batch_size / 64
        if all(h.kind == "detection" for h in self.head_configs):
            return 2e-3
        return 7e-4

    @property
    def close_mosaic_epochs(self) -> int:
        """The last epochs that train without image mixing: `augment.close_mosaic`, or the
        rule it picks when null.

        With a detection head: half a run of 10 epochs or more, at most 10 epochs
        (measured on fruits + household at 10 epochs, where mixing in the first half beat
        no mixing with group-normalised heads), and the whole of a shorter run (the
        5-epoch demo learned less when it mixed). Image-level heads only: 10,
        ultralytics' rule (classification and tags were measured without mixing).
        """
        if self.augment.close_mosaic is not None:
            return self.augment.close_mosaic
        epochs = self.train.epochs
        if epochs >= 10 and any(h.kind == "detection" for h in self.head_configs):
            return min(10, epochs // 2)
        return min(10, epochs)

    def augmenter_kwargs(self) -> Dict[str, Any]:
        """The keyword arguments of `YoloV4Augment` but the image size: `augment`'s values
        but the schedule (`close_mosaic`) and, per dataset, whether its images may be
        mixed (`mix_images`) and, if any dataset sets its own, the hue shifts (`hue`)."""
        chain = {k: v for k, v in dataclasses.asdict(self.augment).items()
                 if k != "close_mosaic"}
        own_hue = any(d.hue is not None for d in self.data.datasets)
        return {**chain, "mixed_datasets": self.mixed_datasets,
                "dataset_hue": self.dataset_hues if own_hue else None}

    @property
    def dataset_hues(self) -> List[float]:
        """Per dataset, the largest hue shift of its images: its `hue`, or `augment.hue`."""
        return [self.augment.hue if d.hue is None else d.hue for d in self.data.datasets]

    @property
    def mixed_datasets(self) -> List[bool]:
        """Per dataset, whether its images may be mixed: `mix_images`, or the rule it
        picks when null: a dataset whose labels train only image-level heads is kept
        whole when the model has a detection head (measured on the four-head model,
        docs/results.md), every other dataset mixes."""
        kinds = {h.name: h.kind for h in self.head_configs}
        has_detection = "detection" in kinds.values()

        def mixes(dataset: "DatasetConfig") -> bool:
            if dataset.mix_images is not None:
                return dataset.mix_images
            own = [kinds.get(name, "detection") for name in self.dataset_heads(dataset)]
            return not (has_detection and all(k in IMAGE_LEVEL_KINDS for k in own))
        return [mixes(d) for d in self.data.datasets]

    @property
    def head_names(self) -> List[str]:
        """Head names in output (head index) order."""
        return [h.name for h in self.head_configs]

    def dataset_heads(self, dataset: "DatasetConfig") -> List[str]:
        """Names of the heads a dataset's labels train."""
        return list(dataset.heads) if dataset.heads else [dataset.name]

    @property
    def routes(self) -> List[List[float]]:
        """`[datasets][heads]` 0/1 table: 1 where the dataset's examples train the head."""
        names = self.head_names
        return [[1.0 if name in self.dataset_heads(d) else 0.0 for name in names]
                for d in self.data.datasets]

    def background_heads(self, dataset: "DatasetConfig") -> List[str]:
        """Names of the detection heads a dataset's images train as background only: its
        `background_for`, and with `data.cross_background` (a detection dataset) every
        detection head it does not label."""
        heads = list(dataset.background_for or [])
        if self.data.cross_background and dataset.label_kind == "detection":
            own = self.dataset_heads(dataset)
            heads += [h.name for h in self.head_configs
                      if h.kind == "detection" and h.name not in own and h.name not in heads]
        return heads

    @property
    def background_routes(self) -> Optional[List[List[float]]]:
        """`[datasets][heads]` 0/1 table: 1 where the dataset's images train the head as
        background only (`background_heads`); None when there is none."""
        table = [[1.0 if name in self.background_heads(d) else 0.0 for name in self.head_names]
                 for d in self.data.datasets]
        return table if any(any(row) for row in table) else None

    def with_heads(self, names: Sequence[str]) -> "ExperimentConfig":
        """A copy with only the heads `names` and the datasets that train them.

        Args:
            names: heads to keep.

        Returns:
            The new config (checked like any other).
        """
        new = copy.deepcopy(self)
        keep = set(names)
        new.heads = [h for h in new.heads if h.name in keep]
        new.data.datasets = [d for d in new.data.datasets if keep & set(self.dataset_heads(d))]
        for dataset in new.data.datasets:
            if dataset.heads:
                dataset.heads = [h for h in dataset.heads if h in keep]
            if dataset.background_for:
                dataset.background_for = [h for h in dataset.background_for if h in keep] or None
        if new.model.head_loss_weights:
            new.model.head_loss_weights = {k: v for k, v in new.model.head_loss_weights.items()
                                           if k in keep} or None
        check_config(new)
        return new

    def head_datasets(self, head: str) -> List[int]:
        """Indices of the datasets whose labels train `head`, in dataset order."""
        return [i for i, d in enumerate(self.data.datasets) if head in self.dataset_heads(d)]

    @property
    def run_path(self) -> str:
        """The run folder with `{name}` filled in."""
        return self.train.run_dir.format(name=self.name)


_CHOICES = {
    "data.on_corrupt": ("fail", "skip"),
    "model.backbone": ("cspdarknet53",),
    "model.box_loss": ("huber", "ciou"),
    "model.cls_loss": ("focal", "varifocal"),
    "model.head_norm": ("batch", "group"),
    "model.detection_towers": ("per_head", "shared"),
    "train.optimizer": ("sgd", "adamw"),
    "train.loss_normalizer": ("per_head", "shared"),
    "train.assigner": ("iou", "atss", "tal"),
    "train.strategy": ("default", "mirrored", "tpu", "multiworker", "jax_data_parallel"),
}
# Keys that existed once and did nothing. A config that sets one (every run folder
# written before they went has them) still loads: the key is dropped with this advice.
_REMOVED = {
    "eval.split": "`python -m train.evaluate --split` picks the split",
    "eval.every_epochs": "the validation loss runs every epoch",
}


def _drop_removed(tree: Dict[str, Any], source: str) -> None:
    for key, advice in _REMOVED.items():
        section, field = key.split(".")
        if isinstance(tree.get(section), dict) and field in tree[section]:
            del tree[section][field]
            report_once(f"warning: {source}: {key} is ignored (it never did anything; "
                        f"{advice}); delete the line")


def config_from_dict(values: Dict[str, Any], overrides: Sequence[str] = (),
                     source: str = "<dict>") -> ExperimentConfig:
    """Builds and validates a config from a nested dict plus overrides.

    Args:
        values: nested mapping as read from YAML.
        overrides: `key=value` strings applied on top.
        source: name used in error messages (the file).

    Returns:
        The validated `ExperimentConfig`.

    Raises:
        ConfigError: unknown key, wrong type or invalid value, naming `source`.
    """
    tree = copy.deepcopy(dict(values or {}))
    try:
        for key, value in parse_overrides(overrides):
            set_path(tree, key, value)
        _drop_removed(tree, source)
        cfg = build_dataclass(ExperimentConfig, tree, "", _CHOICES)
        check_config(cfg)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from err
    return cfg


def load_config(path: str, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Loads a YAML config file and applies `--set` overrides.

    Args:
        path: YAML file.
        overrides: `key=value` strings.

    Returns:
        The validated `ExperimentConfig`.

    Raises:
        ConfigError: the file is missing, is not YAML, or holds a bad key or value; the
            message names the file.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file does not exist")
    try:
        with open(path, encoding="utf-8") as stream:
            values = yaml.safe_load(stream)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from err
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return config_from_dict(values or {}, overrides, source=path)


def config_to_dict(cfg: ExperimentConfig) -> Dict[str, Any]:
    """Returns the config as plain nested dicts and lists (YAML-ready)."""
    return dataclasses.asdict(cfg)


def dump_config(cfg: ExperimentConfig) -> str:
    """Returns the config as YAML text, in field order."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)


def _split_paths(dataset: DatasetConfig, split: str) -> List[Tuple[str, str, bool]]:
    """`(what, path, is_folder)` a dataset's split needs, by format."""
    if dataset.format == "image_folder":
        return [("split folder", os.path.join(dataset.root, split), True)]
    if dataset.format == "table":
        return [("table", dataset.table_path(split), False),
                ("image folder", os.path.join(dataset.root, dataset.images), True)]
    ann, images = dataset.paths(split)
    return [("annotation file", ann, False), ("image folder", images, True)]


def check_dataset_paths(cfg: ExperimentConfig, splits: Sequence[str] = ("train", "val")) -> None:
    """Checks that every dataset folder and the files and folders of each split exist.

    Args:
        cfg: the experiment config.
        splits: splits whose files must exist.

    Raises:
        ConfigError: the first missing path, naming the dataset and the path.
    """
    for index, dataset in enumerate(cfg.data.datasets):
        if not os.path.isdir(dataset.root):
            raise ConfigError(f"dataset '{dataset.name}': folder {dataset.root} does not exist "
                              f"(set data.datasets.{index}.root)")
        if dataset.exclude and not os.path.isfile(dataset.exclude):
            raise ConfigError(f"dataset '{dataset.name}': exclude file {dataset.exclude} does "
                              f"not exist (set data.datasets.{index}.exclude)")
        for split in splits:
            for what, path, folder in _split_paths(dataset, split):
                if not (os.path.isdir(path) if folder else os.path.isfile(path)):
                    raise ConfigError(f"dataset '{dataset.name}': {what} {path} does not "
                                      "exist")
