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
from effdet_tf.config import DatasetConfig, ExperimentConfig
from effdet_tf.errors import DataError
from effdet_tf.batch_schema import split_batch


def class_table(cfg: ExperimentConfig) -> Dict[str, Dict[str, List[Any]]]:
    """Each head's classes in output order, with the COCO category ids of its first dataset.

    A head's classes are its `classes` in the config, or else the categories of the
    first dataset that labels it (ascending category id).

    Args:
        cfg: the experiment config.

    Returns:
        `{head: {"names": [...], "category_ids": [...]}}` (`classes.json` of a run);
        a category id is -1 where the first dataset lacks the class.
    """
    table = {}
    for head in cfg.head_configs:
        dataset = cfg.data.datasets[cfg.head_datasets(head.name)[0]]
        ann, images = dataset.paths("train")
        source = CocoSource(dataset.name, ann, images, class_names=head.classes)
        table[head.name] = {"names": list(source.class_names),
                            "category_ids": list(source.category_ids)}
    return table


def dataset_class_names(cfg: ExperimentConfig) -> List[Optional[List[str]]]:
    """Per dataset, the class list its boxes are indexed by: its detection head's.

    None where the dataset defines that list itself (the first dataset of a head without
    `classes`), so its own categories are read in their own order.
    """
    heads = {h.name: h for h in cfg.head_configs}
    table: Optional[Dict[str, Dict[str, List[Any]]]] = None  # read only when needed, once
    lists: List[Optional[List[str]]] = []
    for index, dataset in enumerate(cfg.data.datasets):
        head = next(heads[h] for h in cfg.dataset_heads(dataset)
                    if heads[h].kind == "detection")
        if head.classes is not None:
            lists.append(list(head.classes))
        elif cfg.head_datasets(head.name)[0] == index:
            lists.append(None)
        else:
            table = table or class_table(cfg)
            lists.append(table[head.name]["names"])
    return lists


def count_images(dataset: DatasetConfig, split: str) -> int:
    """Number of images listed in a split's annotation file (each file read once).

    Raises:
        DataError: the file is not readable JSON with an `images` list.
    """
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
    """Checks every dataset's json and image files for each split, listing every problem.

    Args:
        cfg: the experiment config.
        splits: the splits to check.

    Raises:
        DataError: any dataset of any split has a problem (all of them listed).
    """
    for split in splits:
        pipeline.build_sources(cfg.data.datasets, split, on_corrupt=cfg.data.on_corrupt,
                               class_names=dataset_class_names(cfg))


def sampling_weights(cfg: ExperimentConfig) -> List[float]:
    """Mixing weights: each dataset's `weight` times its number of training images."""
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
    return YoloV4Augment(cfg.data.image_size, **cfg.augment.chain_kwargs())


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
        routes=cfg.routes)
    if on_device:
        return dataset
    return dataset.map(split_batch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def eval_dataset(cfg: ExperimentConfig, dataset_id: int,
                 split: str) -> Tuple[tf.data.Dataset, CocoSource]:
    """Finite batches of one dataset's split, with the meta keys to map boxes back."""
    return pipeline.build_eval_dataset(
        cfg.data.datasets[dataset_id], dataset_id, split=split,
        image_size=cfg.data.image_size, max_boxes=cfg.data.max_boxes,
        batch_size=cfg.eval.batch_size, class_names=dataset_class_names(cfg)[dataset_id],
        routes=cfg.routes)


def make_val_dataset(cfg: ExperimentConfig, split: str = "val") -> tf.data.Dataset:
    """Every dataset's split once, as `(images, targets)` pairs for the validation loss."""
    parts = [eval_dataset(cfg, i, split)[0] for i in range(len(cfg.data.datasets))]
    joined = parts[0]
    for part in parts[1:]:
        joined = joined.concatenate(part)
    return joined.map(split_batch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def clean_train_images(cfg: ExperimentConfig) -> tf.data.Dataset:
    """Training images of every dataset, mixed, without augmentation (for precise BN)."""
    dataset = pipeline.build_train_dataset(
        cfg.data.datasets, image_size=cfg.data.image_size, max_boxes=cfg.data.max_boxes,
        batch_size=cfg.train.batch_size, seed=cfg.train.seed + 1,
        weights=sampling_weights(cfg), on_corrupt=cfg.data.on_corrupt, validate=False,
        class_names=dataset_class_names(cfg))
    return dataset.map(lambda batch: batch["images"], num_parallel_calls=tf.data.AUTOTUNE)
