"""Exclusion lists: images a dataset config leaves out without touching the files.

An exclusion file (a dataset's `exclude:`) holds one image path a line, relative to the
dataset's `root` (absolute paths work too); blank lines and text after `#` are ignored.
`python -m data_pipelines.inspect` writes such files. Every source applies the list the
same way (`excluded_paths`, then its `drop_files`), so training, evaluation and the split
statistics all see the cleaned view.
"""
import os
from typing import Dict, FrozenSet, Iterable, List, Tuple

from effdet_tf.errors import DataError

_CACHE: Dict[Tuple[str, float, str], FrozenSet[str]] = {}


def path_key(path: str) -> str:
    """The form two paths of one file share (absolute, normalised, case-folded on Windows)."""
    return os.path.normcase(os.path.normpath(os.path.abspath(path)))


def read_lines(exclude_file: str) -> List[Tuple[int, str]]:
    """The `(line number, path)` entries of an exclusion file.

    Args:
        exclude_file: the file.

    Returns:
        The non-empty entries, comments stripped.

    Raises:
        DataError: the file cannot be read.
    """
    try:
        with open(exclude_file, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{exclude_file}: cannot read the exclusion file ({err})") from err
    entries = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if text:
            entries.append((number, text))
    return entries


def excluded_paths(exclude_file: str, root: str) -> FrozenSet[str]:
    """The `path_key` of every image an exclusion file names (read once per file version).

    Args:
        exclude_file: the dataset's `exclude` file; "" for none.
        root: the dataset folder the entries are relative to.

    Returns:
        The keys (empty when `exclude_file` is "").

    Raises:
        DataError: the file cannot be read.
    """
    if not exclude_file:
        return frozenset()
    try:
        stamp = os.path.getmtime(exclude_file)
    except OSError as err:
        raise DataError(f"{exclude_file}: the exclusion file does not exist") from err
    cache_key = (path_key(exclude_file), stamp, path_key(root))
    if cache_key not in _CACHE:
        _CACHE[cache_key] = frozenset(path_key(os.path.join(root, entry))
                                      for _, entry in read_lines(exclude_file))
    return _CACHE[cache_key]


def write_exclude(exclude_file: str, root: str, paths: Iterable[str], header: str) -> int:
    """Writes an exclusion file (root-relative posix paths, sorted), atomically.

    Args:
        exclude_file: the file to write.
        root: the dataset folder.
        paths: absolute (or working-directory relative) image paths.
        header: comment text for the top of the file (each line gets "# ").

    Returns:
        Number of entries written.
    """
    entries = sorted({os.path.relpath(p, root).replace(os.sep, "/") for p in paths})
    text = "".join(f"# {line}\n" for line in header.splitlines())
    text += "".join(f"{entry}\n" for entry in entries)
    temp = f"{exclude_file}.tmp"
    with open(temp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temp, exclude_file)
    return len(entries)
