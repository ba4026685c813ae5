"""Classification datasets stored as image folders: `root/<split>/<class>/<image>`."""
import os
from typing import List, Optional

import numpy as np

from effdet_tf.errors import DataError
from data_pipelines.image_labels import (IMAGE_EXTENSIONS, ImageLabelSource, is_image_file,
                                         more)


def _subfolders(folder: str) -> List[str]:
    """Sorted names of the visible subfolders of a folder."""
    return sorted(e.name for e in os.scandir(folder)
                  if e.is_dir() and not e.name.startswith("."))


def list_images(folder: str) -> List[str]:
    """Sorted names of the visible image files directly in a folder.

    Args:
        folder: a class folder.

    Returns:
        File names (no folder), sorted; hidden files, other files and subfolders left out.
    """
    return sorted(e.name for e in os.scandir(folder) if e.is_file() and is_image_file(e.name))


class ImageFolderSource(ImageLabelSource):
    """One split of an image-folder classification dataset: `root/<split>/<class>/*`.

    Image files are those with an extension of `IMAGE_EXTENSIONS` (any case); hidden files,
    other files and deeper folders are ignored. Images come class by class, each folder's
    files sorted by name. `ids` are the paths relative to `root` ("train/dress/a.jpg");
    every label is known.

    Args:
        name: dataset name.
        root: the dataset folder, holding one folder per split.
        split: the split folder to read ("train", "val", ...).
        head: the head its labels train.
        dataset_id: index of the dataset, carried by every example.
        class_names: the head's classes, in output order; each class folder must be one
            (a class may have no folder or no image in this split). None: the sorted
            class folder names of this split.

    Raises:
        DataError: the split folder is missing or has no image, or a class folder is not
            one of `class_names`.

    Example:
        >>> src = ImageFolderSource("clothing", "datasets/clothing", "train", head="category")
        >>> ds = src.dataset(224, 1, shuffle=True, repeat=True)
    """

    def __init__(self, name: str, root: str, split: str, *, head: str, dataset_id: int = 0,
                 class_names: Optional[List[str]] = None):
        self.root = str(root)
        self.split = str(split)
        split_dir = os.path.join(self.root, self.split)
        super().__init__(name, head, "classification", dataset_id, split_dir)
        layout = f"images go in {os.path.join(split_dir, '<class>', '<image>')}"
        if not os.path.isdir(split_dir):
            raise DataError(f"{split_dir}: split with no rows: the folder does not exist "
                            f"({layout})")
        folders = _subfolders(split_dir)
        if class_names is None:
            self.class_names = folders
        else:
            self.class_names = [str(c) for c in class_names]
            self._check_folders(folders)
        index = {c: i for i, c in enumerate(self.class_names)}
        classes = []
        for folder in folders:
            for file_name in list_images(os.path.join(split_dir, folder)):
                path = os.path.join(split_dir, folder, file_name)
                self.ids.append(f"{self.split}/{folder}/{file_name}")
                self.paths.append(path)
                self.where.append(path)
                classes.append(index[folder])
        if not self.ids:
            raise DataError(f"{split_dir}: split with no rows: no image file "
                            f"({' '.join(IMAGE_EXTENSIONS)}) in its class folders ({layout})")
        self.labels = np.zeros((len(classes), self.num_classes), np.float32)
        self.labels[np.arange(len(classes)), classes] = 1.0
        self.label_mask = np.ones_like(self.labels)
        self._finish()

    def _check_folders(self, folders: List[str]) -> None:
        """Raises when a class folder is not one of the head's classes."""
        unknown = [f for f in folders if f not in self.class_names]
        if unknown:
            others = ", ".join(f"'{f}'" for f in unknown[1:])
            raise DataError(
                f"{self.origin}: unknown class '{unknown[0]}' (folder "
                f"{os.path.join(self.origin, unknown[0])}) is not a class of head "
                f"'{self.head}' ({', '.join(self.class_names)}); rename the folder or add "
                "the class to the head's `classes`"
                + (more(len(unknown) - 1, f"folders: {others}")))
