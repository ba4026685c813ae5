"""Output handling for exports: refuse existing outputs, write atomically, clean up on failure.

Every export is written to a hidden temporary path in the destination folder and
renamed into place only when it is complete, so a failed or interrupted export never
leaves a partial file or folder under the requested name.
"""
import contextlib
import os
import shutil
import tempfile
from typing import Iterator, Mapping, Sequence

import numpy as np

from effdet_tf.errors import ExportError


def check_output(path: str, overwrite: bool) -> None:
    """Refuses an existing output unless `overwrite`.

    Args:
        path: the requested output file or folder.
        overwrite: allow replacing it.

    Missing parent folders are fine (the export creates them); a parent that exists but
    is a file is not.

    Raises:
        ExportError: the path exists and `overwrite` is False, or a parent is not a folder.
    """
    if os.path.lexists(path) and not overwrite:
        raise ExportError(f"{path} already exists; pass --overwrite to replace it")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ExportError(f"cannot write {path}: {parent} is not a folder")


def _make_parents(folder: str) -> list:
    """Creates `folder` and its missing parents; returns those created, deepest first."""
    created = []
    while not os.path.exists(folder):
        created.append(folder)
        folder = os.path.dirname(folder)
    for path in reversed(created):
        os.mkdir(path)
    return created


def remove_path(path: str) -> None:
    """Deletes a file or folder if it exists."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def _set_default_mode(path: str, is_dir: bool) -> None:
    """Gives a temporary file or folder (created private) the usual umask permissions."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if is_dir else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_output(path: str, *, overwrite: bool, is_dir: bool = False) -> Iterator[str]:
    """Yields a temporary path beside `path`; renames it to `path` when the block succeeds.

    On any exception the temporary path is deleted and the exception propagates; an
    existing `path` is left untouched.

    Args:
        path: the final file or folder.
        overwrite: allow replacing an existing `path`.
        is_dir: the output is a folder (the temporary path is created empty).

    Yields:
        The temporary path to write to.

    Raises:
        ExportError: `path` exists and `overwrite` is False.

    Example:
        >>> with atomic_output("model.onnx", overwrite=False) as tmp:
        ...     write_model(tmp)
    """
    check_output(path, overwrite)
    parent = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(os.path.normpath(path))
    created = _make_parents(parent)
    if is_dir:
        tmp = tempfile.mkdtemp(prefix=f".{base}.", suffix=".tmp", dir=parent)
    else:
        handle, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=parent)
        os.close(handle)
    try:
        yield tmp
        _set_default_mode(tmp, is_dir)
        if os.path.lexists(path):
            remove_path(path)
        os.replace(tmp, path)
    except BaseException:
        remove_path(tmp)
        for folder in created:  # the folders this export made, if still empty
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise


def write_text_atomic(path: str, text: str) -> None:
    """Writes a small text file through a temporary file and a rename."""
    with atomic_output(path, overwrite=True) as tmp:
        with open(tmp, "w", encoding="utf-8") as stream:
            stream.write(text)


def class_files(folder: str, class_names: Mapping[str, Sequence[str]]) -> dict:
    """Paths and contents of the `<head>_classes.txt` files of an export.

    Args:
        folder: where they go.
        class_names: `{head: [name, ...]}` in model class order.

    Returns:
        `{path: text}`, one name per line.
    """
    return {os.path.join(folder, f"{head}_classes.txt"): "".join(f"{n}\n" for n in names)
            for head, names in class_names.items()}


def check_class_files(files: Mapping[str, str], overwrite: bool) -> None:
    """Refuses class files that exist with other contents, unless `overwrite`.

    Args:
        files: `{path: text}` from `class_files`.
        overwrite: allow replacing them.

    Raises:
        ExportError: a file exists with different contents and `overwrite` is False.
    """
    if overwrite:
        return
    for path, text in files.items():
        if os.path.lexists(path):
            with open(path, encoding="utf-8") as stream:
                if stream.read() != text:
                    raise ExportError(f"{path} already exists with other class names; "
                                      "pass --overwrite to replace it")


def write_class_files(files: Mapping[str, str]) -> None:
    """Writes the files from `class_files`, each atomically."""
    for path, text in files.items():
        write_text_atomic(path, text)


def read_image(path: str) -> np.ndarray:
    """An image file as upright RGB uint8 `[H, W, 3]` (ExportError when unreadable)."""
    from PIL import Image, ImageOps  # pylint: disable=import-outside-toplevel  # export only

    try:
        with Image.open(path) as img:
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    except (OSError, ValueError, SyntaxError) as err:
        raise ExportError(f"cannot read image {path} ({err})") from err
