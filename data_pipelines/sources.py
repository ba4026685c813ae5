"""Opens the source of a dataset config's split, whatever its format.

Every source serves unbatched examples with the keys of `effdet_tf.batch_schema`
(`images`, `boxes`, `classes`, `dataset_id`, and `labels/<head>`, `label_mask/<head>` for
image-level labels); `complete_example` gives every example of a mixed pipeline the
same keys. A new format is one source file and one branch of `open_source`.
"""
import os
from typing import Any, Dict, List, Optional, Union

import tensorflow as tf

from data_pipelines.coco import CocoSource
from data_pipelines.exclude import excluded_paths
from data_pipelines.image_folder import ImageFolderSource
from data_pipelines.image_labels import ImageLabelSource
from data_pipelines.table_source import TableSource
from effdet_tf import batch_schema as schema

Source = Union[CocoSource, ImageLabelSource]


def open_source(dataset: Any, split: str, *, dataset_id: int = 0, head: Optional[str] = None,
                class_names: Optional[List[str]] = None) -> Source:
    """The source of one split of a dataset config (`effdet_tf.config.DatasetConfig`).

    Args:
        dataset: the dataset config (`name`, `format`, `root` and the format's keys).
        split: "train", "val" or "test".
        dataset_id: its index in the config, carried by every example.
        head: the head its labels train (image-level formats; default: the dataset's
            `heads[0]`, else its name).
        class_names: the head's classes in output order (None: the dataset's own).

    Returns:
        A `CocoSource` or an `ImageLabelSource`, without the images the dataset's
        `exclude` file names (their number in the source's `excluded`).

    Raises:
        DataError: the split's files are missing or malformed (one line, naming the file).
        ValueError: an unknown format (the config check refuses it first).
    """
    head = head or (dataset.heads[0] if dataset.heads else dataset.name)
    exclude_file = getattr(dataset, "exclude", "")
    exclude = excluded_paths(exclude_file, dataset.root) if exclude_file else frozenset()
    if dataset.format == "coco":
        annotations, image_dir = dataset.paths(split)
        return CocoSource(dataset.name, annotations, image_dir, dataset_id=dataset_id,
                          class_names=class_names, exclude=exclude)
    source: ImageLabelSource
    if dataset.format == "image_folder":
        source = ImageFolderSource(dataset.name, dataset.root, split, head=head,
                                   dataset_id=dataset_id, class_names=class_names)
    elif dataset.format == "table":
        per_split = "{split}" in dataset.table
        source = TableSource(
            dataset.name, dataset.table_path(split), os.path.join(dataset.root, dataset.images),
            split, head=head, kind=dataset.label_kind, dataset_id=dataset_id,
            id_column=dataset.id_column, label_column=dataset.label_column or None,
            tag_columns=dataset.tag_columns,
            split_column=None if per_split else dataset.split_column, class_names=class_names)
    else:
        raise ValueError(f"dataset {dataset.name!r}: unknown format {dataset.format!r}")
    source.excluded = source.drop_files(exclude) if exclude else 0
    return source


def source_file(source: Source) -> str:
    """The file or folder to name in messages about a source."""
    return source.annotation_file if isinstance(source, CocoSource) else source.origin


def labelled_images(source: Source) -> int:
    """Number of images of a source that teach its head something (a box, a known label)."""
    if isinstance(source, CocoSource):
        return source.labelled_images()
    return int((source.label_mask.max(axis=1) > 0).sum()) if source.num_images else 0


def complete_example(example: Dict[str, tf.Tensor], label_heads: Dict[str, int],
                     keep_meta: bool = False) -> Dict[str, tf.Tensor]:
    """The example with every image-level label key of the model (absent ones zero).

    Args:
        example: an unbatched example of any source.
        label_heads: `{head: classes}` of every image-level head in the model.
        keep_meta: keep the meta keys (`image_id`, ...) of evaluation examples.

    Returns:
        The example keys, plus `labels/<head>` and `label_mask/<head>` for every head of
        `label_heads` (zeros, i.e. unknown, where the source has none); other keys of the
        source are dropped unless `keep_meta`.
    """
    out = {k: v for k, v in example.items() if keep_meta or k in schema.EXAMPLE_KEYS}
    for head, classes in label_heads.items():
        for key in (schema.labels_key(head), schema.label_mask_key(head)):
            out[key] = example.get(key, tf.zeros([classes], tf.float32))
    return out
