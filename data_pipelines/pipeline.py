"""Training and evaluation input pipelines built from dataset configs."""
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from effdet_tf import batch_schema as schema
from effdet_tf.errors import DataError, report_once
from data_pipelines.mixing import mix_datasets
from data_pipelines.sources import Source, complete_example, open_source, source_file
from data_pipelines.validate import format_problems

ClassLists = Optional[Sequence[Optional[List[str]]]]
Routes = Optional[Sequence[Sequence[float]]]
LabelHeads = Optional[Dict[str, int]]
Augmenter = Callable[[Dict[str, tf.Tensor], tf.Tensor], Dict[str, tf.Tensor]]


def build_sources(datasets: Sequence[Any], split: str, *, on_corrupt: str = "fail",
                  validate: bool = True, class_names: ClassLists = None) -> List[Source]:
    """Opens one source per dataset config (dataset id = position) and validates all.

    Args:
        datasets: dataset configs (`effdet_tf.config.DatasetConfig`: `name`, `format`,
            `root` and the format's keys).
        split: "train", "val" or "test".
        on_corrupt: "fail" counts corrupt images as problems; "skip" tolerates them.
        validate: check every annotation and image file up front.
        class_names: per dataset, the class list of the head it trains (None: its own
            classes); see `data_pipelines.sources.open_source`.

    Returns:
        The sources, in order.

    Raises:
        DataError: one error listing every problem of every dataset.
    """
    sources, messages, failed = [], [], []
    for i, dataset in enumerate(datasets):
        try:
            source = open_source(dataset, split, dataset_id=i,
                                 class_names=class_names[i] if class_names else None)
        except DataError as err:
            messages.append(str(err))
            failed.append(dataset.name)
            continue
        sources.append(source)
        ann = source_file(source)
        if validate:
            found = source.problems(check_images=True)
            for problem in found:
                if problem.kind == "warning":
                    report_once(f"warning: {problem}")
            problems = [p for p in found
                        if p.kind == "error" or (p.kind == "corrupt" and on_corrupt == "fail")]
            if problems:
                messages.append(format_problems(problems, ann))
                failed.append(ann)
    if messages:
        header = f"{len(failed)} of {len(datasets)} datasets have problems ({split} split)"
        raise DataError("\n".join([header] + messages))
    return sources


def _select_train_keys(batch: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    return {k: v for k, v in batch.items()
            if k in schema.EXAMPLE_KEYS or schema.is_image_label_key(k)}


def add_head_mask(batch: Dict[str, tf.Tensor], routes: Routes,
                  background: Routes = None) -> Dict[str, tf.Tensor]:
    """Adds `head_mask` `[B, H]`: row `dataset_id` of the `[datasets][heads]` route table,
    and `background_mask` `[B, H]` the same way from the `background` table when given."""
    if routes is None:
        return batch
    out = dict(batch)
    for key, table in ((schema.HEAD_MASK, routes), (schema.BACKGROUND_MASK, background)):
        if table is not None:
            out[key] = tf.gather(tf.constant(table, tf.float32), batch[schema.DATASET_ID])
    return out


def build_train_dataset(  # pylint: disable=too-many-arguments  # keyword-only settings
        datasets: Sequence[Any], *, image_size: int, max_boxes: int, batch_size: int,
        seed: int, weights: Optional[Sequence[float]] = None,
        one_dataset_per_batch: bool = False, augmenter: Optional[Augmenter] = None,
        split: str = "train", on_corrupt: str = "fail", validate: bool = True,
        class_names: ClassLists = None, routes: Routes = None, background: Routes = None,
        label_heads: LabelHeads = None) -> tf.data.Dataset:
    """Infinite batched raw batches mixed from several datasets of any format.

    Args:
        datasets: dataset configs (`name`, `paths(split)`, optional `weight`).
        image_size: model input side `S`.
        max_boxes: box rows per image.
        batch_size: examples per batch.
        seed: seed of shuffling, dataset sampling and augmentation.
        weights: sampling weight per dataset; when None, each config's `weight` attribute
            (default 1.0, i.e. equal sampling whatever the sizes).
        one_dataset_per_batch: every batch from a single dataset.
        augmenter: `augmenter(batch, seed)` with an int32 `[2]` seed, mapped after batching;
            the seed is `[seed, batch index]`, so runs repeat exactly.
        split: split to read.
        on_corrupt: "fail" or "skip".
        validate: list the problems of every dataset in one error up front; when False,
            each source still checks itself (and raises) as its pipeline is built.
        class_names: see `build_sources`.
        routes: `[datasets][heads]` 0/1 table; adds `head_mask` (None: no mask).
        background: `[datasets][heads]` 0/1 table of the heads each dataset is background
            for; adds `background_mask` (with `routes`; None: no such key).
        label_heads: `{head: classes}` of the image-level heads: every example gets their
            `labels/<head>` and `label_mask/<head>` (zero where its source has none).

    Returns:
        A dataset of dicts with `images`, `boxes`, `classes`, `dataset_id`, the label
        keys of `label_heads` (and `head_mask` with `routes`, `background_mask` with
        `background`).

    Raises:
        DataError: listing every problem of every dataset.
    """
    sources = build_sources(datasets, split, on_corrupt=on_corrupt, validate=validate,
                            class_names=class_names)
    if weights is None:
        weights = [float(getattr(d, "weight", 1.0)) for d in datasets]
    label_heads = dict(label_heads or {})
    per_source = [
        src.dataset(image_size, max_boxes, shuffle=True, seed=seed + 1000 * i, repeat=True,
                    on_corrupt=on_corrupt).map(lambda ex: complete_example(ex, label_heads))
        for i, src in enumerate(sources)]
    ds = mix_datasets(per_source, weights=weights, seed=seed, batch_size=batch_size,
                      one_dataset_per_batch=one_dataset_per_batch)
    if augmenter is not None:
        base = tf.constant(seed % (2 ** 31), tf.int32)

        def augment(index: tf.Tensor, batch: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
            step = tf.cast(index % (2 ** 31), tf.int32)
            return _select_train_keys(augmenter(batch, tf.stack([base, step])))

        ds = ds.enumerate().map(augment, num_parallel_calls=tf.data.AUTOTUNE,
                                deterministic=True)
    if routes is not None:
        ds = ds.map(lambda batch: add_head_mask(batch, routes, background))
    return ds.prefetch(tf.data.AUTOTUNE)


def build_eval_dataset(dataset: Any, dataset_id: int, *, split: str, image_size: int,
                       max_boxes: int, batch_size: int, class_names: Optional[List[str]] = None,
                       routes: Routes = None, background: Routes = None,
                       label_heads: LabelHeads = None) -> Tuple[tf.data.Dataset, Source]:
    """A finite, ordered evaluation pipeline of one dataset (every image once, with meta).

    Args:
        dataset: dataset config (`name`, `format`, ...).
        dataset_id: its index in the config.
        split: split to read.
        image_size: model input side `S`.
        max_boxes: box rows per image.
        batch_size: examples per batch (the last batch may be smaller).
        class_names: the class list of the head it trains (see `open_source`).
        routes: `[datasets][heads]` table; adds `head_mask` (None: no mask).
        background: see `build_train_dataset`.
        label_heads: see `build_train_dataset`.

    Returns:
        `(dataset, source)`: batches with the meta keys `image_id`, `scale`, `pad`,
        `orig_size`, and the source (its ground truth: a `CocoSource`'s COCO object, an
        `ImageLabelSource`'s label arrays, indexed by `image_id`).

    Raises:
        DataError: listing every problem of the dataset.
    """
    source = open_source(dataset, split, dataset_id=dataset_id, class_names=class_names)
    label_heads = dict(label_heads or {})
    ds = source.dataset(image_size, max_boxes, shuffle=False, repeat=False, with_meta=True)
    ds = ds.map(lambda ex: complete_example(ex, label_heads, keep_meta=True)).batch(batch_size)
    if routes is not None:
        ds = ds.map(lambda batch: add_head_mask(batch, routes, background))
    return ds.prefetch(tf.data.AUTOTUNE), source
