"""Datasets for training and evaluation, built from an experiment config."""
import functools
import json
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from data_pipelines import pipeline
from data_pipelines.augment import YoloV4Augment
from data_pipelines.coco import CocoSource
from data_pipelines.sources import Source, labelled_images, open_source, source_file
from effdet_tf.config import DatasetConfig, ExperimentConfig
from effdet_tf.names import IMAGE_LEVEL_KINDS
from effdet_tf.errors import DataError
from effdet_tf.batch_schema import BACKGROUND_MASK, HEAD_MASK, split_batch


def class_table(cfg: ExperimentConfig) -> Dict[str, Dict[str, List[Any]]]:
    """Each head's classes in output order (and, for detection, COCO category ids).

    A head's classes are its `classes` in the config, or else those of the first dataset
    that labels it: a COCO dataset's categories (ascending category id), an image
    folder's class folders or a table's classes (sorted), a table's tag columns (in
    order).

    Args:
        cfg: the experiment config.

    Returns:
        `{head: {"names": [...], "kind": kind}}` (`classes.json` of a run); detection
        heads add the `"category_ids"` of their first dataset (-1 where it lacks the
        class), image-level heads the known positives `"train_counts"` and known values
        `"train_known"` per class over their training datasets (class weights and the
        trivial baseline use them).
    """
    table = {}
    for head in cfg.head_configs:
        indices = cfg.head_datasets(head.name)
        source = open_source(cfg.data.datasets[indices[0]], "train", dataset_id=indices[0],
                             head=head.name, class_names=head.classes)
        entry: Dict[str, Any] = {"names": list(source.class_names), "kind": head.kind}
        if isinstance(source, CocoSource):
            entry["category_ids"] = list(source.category_ids)
        else:
            sources = [source] + [open_source(cfg.data.datasets[i], "train", dataset_id=i,
                                              head=head.name, class_names=entry["names"])
                                  for i in indices[1:]]
            entry["train_counts"] = [float(v) for v in sum(s.label_counts() for s in sources)]
            entry["train_known"] = [float(v) for v in sum(s.known_counts() for s in sources)]
        table[head.name] = entry
    return table


def dataset_class_names(cfg: ExperimentConfig) -> List[Optional[List[str]]]:
    """Per dataset, the class list its labels are indexed by: its head's.

    None where the dataset defines that list itself (the first dataset of a head without
    `classes`), so its own classes are read in their own order.
    """
    heads = {h.name: h for h in cfg.head_configs}
    table: Optional[Dict[str, Dict[str, List[Any]]]] = None  # read only when needed, once
    lists: List[Optional[List[str]]] = []
    for index, dataset in enumerate(cfg.data.datasets):
        head = heads[cfg.dataset_heads(dataset)[0]]
        if head.classes is not None:
            lists.append(list(head.classes))
        elif cfg.head_datasets(head.name)[0] == index:
            lists.append(None)
        else:
            table = table or class_table(cfg)
            lists.append(table[head.name]["names"])
    return lists


def label_heads(cfg: ExperimentConfig,
                classes: Optional[Dict[str, Dict[str, Any]]] = None) -> Dict[str, int]:
    """`{head: classes}` of the image-level heads (their `labels/<head>` batch keys).

    Args:
        cfg: the experiment config.
        classes: the class table when already read (`class_table`).

    Returns:
        The class count of every classification and multilabel head, in head order.
    """
    image_level = [h.name for h in cfg.head_configs if h.kind in IMAGE_LEVEL_KINDS]
    if not image_level:
        return {}
    classes = classes or class_table(cfg)
    return {name: len(classes[name]["names"]) for name in image_level}


def scored_pairs(cfg: ExperimentConfig, kinds: Sequence[str]) -> List[Tuple[str, int, str]]:
    """`(result key, dataset index, head)` for every dataset a head of `kinds` is scored on.

    A head is scored on each dataset that trains it; the key is the head's name when it
    has one dataset, else `<head>/<dataset>`.
    """
    pairs = []
    for head in cfg.head_configs:
        if head.kind not in kinds:
            continue
        datasets = cfg.head_datasets(head.name)
        for index in datasets:
            key = head.name if len(datasets) == 1 else \
                f"{head.name}/{cfg.data.datasets[index].name}"
            pairs.append((key, index, head.name))
    return pairs


def count_images(dataset: DatasetConfig, split: str) -> int:
    """Number of images of a dataset's split (a COCO file is read once per version).

    Raises:
        DataError: the split's annotation file, folder or table is unreadable.
    """
    if dataset.format != "coco" or dataset.exclude:
        return len(open_source(dataset, split).image_ids)
    ann, _ = dataset.paths(split)
    try:
        return _count_images(ann, os.path.getmtime(ann))
    except OSError as err:
        raise DataError(f"{ann}: cannot count images ({err})") from err


@functools.lru_cache(maxsize=64)
def _count_images(ann: str, mtime: float) -> int:
    """`count_images` of one file version (`mtime` keys the cache)."""
    del mtime
    try:
        with open(ann, encoding="utf-8") as stream:
            return len(json.load(stream)["images"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{ann}: cannot count images ({err})") from err


def validate_datasets(cfg: ExperimentConfig, splits: Sequence[str]) -> None:
    """Checks every dataset's files for each split, and that every head has training labels.

    Args:
        cfg: the experiment config.
        splits: the splits to check.

    Raises:
        DataError: any dataset of any split has a problem (all of them listed), or a head
            gets no labelled training image from its datasets.
    """
    for split in splits:
        sources = pipeline.build_sources(cfg.data.datasets, split,
                                         on_corrupt=cfg.data.on_corrupt,
                                         class_names=dataset_class_names(cfg))
        for dataset, source in zip(cfg.data.datasets, sources):
            if source.excluded:
                print(f"dataset '{dataset.name}' {split}: {source.excluded} image(s) left out "
                      f"(listed in {dataset.exclude})", flush=True)
        if split != "train":
            continue
        for head in cfg.head_configs:
            indices = cfg.head_datasets(head.name)
            if not any(labelled_images(sources[i]) for i in indices):
                names = ", ".join(cfg.data.datasets[i].name for i in indices)
                raise DataError(f"head '{head.name}': no training image of {names} has a "
                                f"known label for it ({source_file(sources[indices[0]])}); "
                                "a head needs labelled training examples")


def sampling_weights(cfg: ExperimentConfig) -> List[float]:
    """Mixing weights: each dataset's `weight` times its training image count to the power
    `data.sampling_power`."""
    return cfg.data.sampling_weights([count_images(d, "train") for d in cfg.data.datasets])


def steps_per_epoch(cfg: ExperimentConfig) -> int:
    """Steps of one epoch: the configured value, or every training image once on average."""
    if cfg.train.steps_per_epoch:
        return int(cfg.train.steps_per_epoch)
    total = sum(count_images(d, "train") for d in cfg.data.datasets)
    return max(1, math.ceil(total / cfg.train.batch_size))


def make_augmenter(cfg: ExperimentConfig) -> Optional[YoloV4Augment]:
    """The YOLOv4 augmenter of the config, or None when augmentation is off."""
    if not cfg.train.augment:
        return None
    return YoloV4Augment(cfg.data.image_size, **cfg.augmenter_kwargs())


def make_train_dataset(cfg: ExperimentConfig, *,
                       augmenter: Optional[YoloV4Augment] = None) -> tf.data.Dataset:
    """Infinite training batches from every dataset, mixed with their ids.

    Args:
        cfg: the experiment config.
        augmenter: augment in tf.data with it and return `(images, targets)` pairs; None
            returns raw dict batches (the train step augments them on the device).

    Returns:
        The batched dataset.
    """
    on_device = augmenter is None
    dataset = pipeline.build_train_dataset(
        cfg.data.datasets, image_size=cfg.data.image_size, max_boxes=cfg.data.max_boxes,
        batch_size=cfg.train.batch_size, seed=cfg.train.seed,
        weights=sampling_weights(cfg),
        one_dataset_per_batch=cfg.data.one_dataset_per_batch, augmenter=augmenter,
        on_corrupt=cfg.data.on_corrupt, class_names=dataset_class_names(cfg),
        routes=cfg.routes, background=cfg.background_routes, label_heads=label_heads(cfg))
    if on_device:
        return dataset
    return dataset.map(split_batch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def eval_dataset(cfg: ExperimentConfig, dataset_id: int,
                 split: str) -> Tuple[tf.data.Dataset, Source]:
    """Finite batches of one dataset's split, with the meta keys to map boxes back."""
    return pipeline.build_eval_dataset(
        cfg.data.datasets[dataset_id], dataset_id, split=split,
        image_size=cfg.data.image_size, max_boxes=cfg.data.max_boxes,
        batch_size=cfg.eval.batch_size, class_names=dataset_class_names(cfg)[dataset_id],
        routes=cfg.routes, background=cfg.background_routes, label_heads=label_heads(cfg))


def fill_batch(images: tf.Tensor, targets: Dict[str, tf.Tensor],
               batch_size: int) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    """Fills a smaller batch up to `batch_size` rows that no head reads.

    The added rows repeat the batch's first example with zero `head_mask` and
    `background_mask` rows: every head's loss and positive count, and each head's
    running mean, leave them out, so
    the validation loss is the same, and every validation batch has one shape (under
    JAX a new shape compiles the evaluation step again, tens of seconds on a GPU).

    Args:
        images: `[n, H, W, 3]`, `n <= batch_size`.
        targets: the batch's targets, `head_mask` among them.
        batch_size: rows wanted.

    Returns:
        `(images, targets)` of `batch_size` rows.
    """
    count = tf.shape(images)[0]
    index = tf.concat([tf.range(count), tf.zeros([batch_size - count], tf.int32)], axis=0)
    real = tf.cast(tf.range(batch_size) < count, tf.float32)
    targets = {key: tf.gather(value, index) for key, value in targets.items()}
    for key in (HEAD_MASK, BACKGROUND_MASK):
        if key in targets:
            targets[key] = targets[key] * real[:, None]
    return tf.gather(images, index), targets


def make_val_dataset(cfg: ExperimentConfig, split: str = "val") -> tf.data.Dataset:
    """Every dataset's split once, as `(images, targets)` pairs for the validation loss,
    each batch `eval.batch_size` rows (a split's last batch filled, see `fill_batch`)."""
    size = cfg.eval.batch_size
    parts = [eval_dataset(cfg, i, split)[0].map(split_batch).map(
        lambda images, targets: fill_batch(images, targets, size))
             for i in range(len(cfg.data.datasets))]
    joined = parts[0]
    for part in parts[1:]:
        joined = joined.concatenate(part)
    return joined.prefetch(2)


def clean_train_images(cfg: ExperimentConfig) -> tf.data.Dataset:
    """Training images of every dataset, mixed, without augmentation (for precise BN)."""
    dataset = pipeline.build_train_dataset(
        cfg.data.datasets, image_size=cfg.data.image_size, max_boxes=cfg.data.max_boxes,
        batch_size=cfg.train.batch_size, seed=cfg.train.seed + 1,
        weights=sampling_weights(cfg), on_corrupt=cfg.data.on_corrupt, validate=False,
        class_names=dataset_class_names(cfg), label_heads=label_heads(cfg))
    return dataset.map(lambda batch: batch["images"], num_parallel_calls=tf.data.AUTOTUNE)
