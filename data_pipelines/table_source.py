"""Image-level labels stored as one table (CSV or Parquet) plus a folder of images."""
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from effdet_tf.errors import DataError
from data_pipelines import validate as val
from data_pipelines.image_labels import ImageLabelSource, ImageResolver, as_text, more

READERS = {".csv": "CSV", ".parquet": "Parquet", ".pq": "Parquet"}
# Label values that mean "not known" (besides None/NaN), as `as_text` writes them.
UNKNOWN_TEXTS = ("", "-1")


def read_table(table_file: str, text_columns: Sequence[Optional[str]] = ()) -> pd.DataFrame:
    """Reads a CSV or Parquet table (by extension, any case) with pandas.

    Args:
        table_file: the file.
        text_columns: CSV columns read as text, not numbers (ids such as "0001").

    Returns:
        The table, columns named by strings, rows numbered 0..n-1.

    Raises:
        DataError: the extension is not .csv, .parquet or .pq, or the file is missing
            or unreadable.
    """
    ext = os.path.splitext(table_file)[1].lower()
    if ext not in READERS:
        raise DataError(f"{table_file}: not a table file: the name must end in "
                        f"{', '.join(READERS)}")
    if not os.path.isfile(table_file):
        raise DataError(f"{table_file}: table file not found")
    try:
        if ext == ".csv":
            table = pd.read_csv(table_file, dtype={c: str for c in text_columns if c})
        else:
            table = pd.read_parquet(table_file)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        detail = " ".join(str(err).split())
        raise DataError(f"{table_file}: not readable as {READERS[ext]} "
                        f"({type(err).__name__}: {detail})") from err
    table.columns = [str(c) for c in table.columns]
    return table.reset_index(drop=True)


def raise_structural(messages: Sequence[str], origin: str) -> None:
    """Raises one `DataError`: the message itself when there is one, else all listed.

    Args:
        messages: one line each, naming the file and row.
        origin: the file or folder named in the summary line of several.

    Raises:
        DataError: when `messages` is not empty.
    """
    if len(messages) == 1:
        raise DataError(messages[0])
    val.raise_if_problems(list(messages), origin)


def _shown(value: Any) -> str:
    """A cell as a message shows it: strings quoted, integer-valued floats as integers."""
    return repr(value) if isinstance(value, str) else str(as_text(value))


def _tag_cell(value: Any) -> float:
    """One multi-label cell as a number: NaN when unknown, inf when not a number."""
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    text = as_text(value)
    if text is None or text in UNKNOWN_TEXTS:
        return np.nan
    try:
        number = float(text)
    except ValueError:
        return np.inf
    return np.nan if number == -1.0 else number


def tag_values(column: pd.Series) -> np.ndarray:
    """A multi-label column as float64: 1, 0, NaN for unknown, other values as they are.

    Args:
        column: the rows of one tag column.

    Returns:
        float64 `[n]`; -1, None, NaN and "" are NaN; a string that is not a number is inf.
    """
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        return np.where(values == -1.0, np.nan, values)
    return np.array([_tag_cell(v) for v in column.tolist()], np.float64)


class TableSource(ImageLabelSource):
    """One split of a table of image-level labels: one row per image, one id column.

    The id column holds each image's path relative to `image_dir`, or its stem (tried
    with each of `IMAGE_EXTENSIONS`). Missing image files are reported by `problems()`
    and `check()`, not here. Messages number rows 1.. in file order (header not counted).

    Args:
        name: dataset name.
        table_file: the .csv, .parquet or .pq table.
        image_dir: folder the ids are relative to.
        split: the split to read.
        head: the head its labels train.
        kind: "classification" (`label_column` holds a class name per row; empty, NaN
            or -1: not labelled) or "multilabel" (one 0/1 column per tag; empty, NaN or
            -1: unknown for that tag).
        dataset_id: index of the dataset, carried by every example.
        id_column: the image id column.
        label_column: the class column (classification).
        tag_columns: the tag columns (multilabel); None or empty: every numeric or boolean
            column but the id and split columns, in table order.
        split_column: rows whose value is `split` form the split; None: every row.
        class_names: the head's classes (or tags) in output order; None: the sorted
            classes present in the split (classification) or the tag columns.

    Raises:
        DataError: the table is unreadable, a column is missing, the split has no row, or
            a row has an empty or duplicate id or a bad label (every problem listed).
        ValueError: `kind` is not "classification" or "multilabel".

    Example:
        >>> src = TableSource("ccp", "ccp/data.parquet", "ccp/images", "train", head="tags",
        ...                   kind="multilabel", id_column="uuid")
    """

    def __init__(self, name: str, table_file: str, image_dir: str, split: str, *, head: str,
                 kind: str, dataset_id: int = 0, id_column: str = "id",
                 label_column: Optional[str] = None, tag_columns: Optional[List[str]] = None,
                 split_column: Optional[str] = "split",
                 class_names: Optional[List[str]] = None):
        super().__init__(name, head, kind, dataset_id, str(table_file))
        self.table_file = str(table_file)
        self.image_dir = str(image_dir)
        self.split = str(split)
        self.id_column = id_column
        self.split_column = split_column
        table = read_table(self.table_file, [id_column, split_column])
        self._require(table, [id_column, split_column])
        rows = self._split_rows(table)
        errors = self._read_ids(table[id_column].iloc[rows].tolist(), rows)
        if kind == "classification":
            errors += self._read_classes(table, rows, label_column, class_names)
        else:
            errors += self._read_tags(table, rows, tag_columns, class_names)
        raise_structural(errors, self.table_file)
        self._finish()

    def _require(self, table: pd.DataFrame, columns: Sequence[Optional[str]],
                 what: str = "") -> None:
        """Raises when a named column is absent, listing the table's columns."""
        for column in columns:
            if column is not None and column not in table.columns:
                raise DataError(f"{self.table_file}: no column '{column}'{what}; the columns "
                                f"are {', '.join(table.columns)}")

    def _split_rows(self, table: pd.DataFrame) -> np.ndarray:
        """Positions of the split's rows."""
        if self.split_column is None:
            rows = np.arange(len(table))
            if rows.size == 0:
                raise DataError(f"{self.table_file}: split with no rows: the table is empty")
            return rows
        texts = [as_text(v) for v in table[self.split_column].tolist()]
        rows = np.flatnonzero([t == self.split for t in texts])
        if rows.size == 0:
            present = sorted({t for t in texts if t is not None})
            shown = ", ".join(f"'{t}'" for t in present[:10]) + more(len(present) - 10, "values")
            raise DataError(f"{self.table_file}: split with no rows: column "
                            f"'{self.split_column}' has no value '{self.split}' (values "
                            f"present: {shown or 'none'})")
        return rows

    def _read_ids(self, values: List[Any], rows: np.ndarray) -> List[str]:
        """Fills `ids`, `paths` and `where`; returns the empty and duplicate id problems."""
        resolver = ImageResolver(self.image_dir)
        empty: List[int] = []
        first: Dict[str, int] = {}
        dups: List[Tuple[int, int]] = []
        for i, value in enumerate(values):
            text = as_text(value) or ""
            self.where.append(f"row {rows[i] + 1} ({self.id_column}={text})")
            self.ids.append(text)
            self.paths.append(resolver.path(text) if text else "")
            key = os.path.normpath(self.paths[-1])
            if not text:
                empty.append(i)
            elif key in first:
                dups.append((first[key], i))
            else:
                first[key] = i
        errors = []
        col = f"column '{self.id_column}'"
        if empty:
            errors.append(f"{self.table_file}: row {rows[empty[0]] + 1}, {col}: empty id (each "
                          "row names its image file, or its stem)" + more(len(empty) - 1))
        if dups:
            one, two = dups[0]
            what = (f"duplicate id '{self.ids[one]}'" if self.ids[one] == self.ids[two] else
                    f"ids '{self.ids[one]}' and '{self.ids[two]}' name the same image")
            errors.append(f"{self.table_file}: rows {rows[one] + 1} and {rows[two] + 1}, {col}: "
                          f"{what} (file {self.paths[one]}); each image once per split"
                          + more(len(dups) - 1, "duplicated rows"))
        return errors

    def _unknown_class(self, texts: List[Optional[str]], column: str, bad: List[int]) -> str:
        """The message for rows whose class is not one of the head's."""
        values = sorted({str(texts[i]) for i in bad})
        tail = f"; unknown values: {', '.join(map(repr, values))}" if len(values) > 1 else ""
        return (f"{self.table_file}: {self.where[bad[0]]}, column '{column}': value "
                f"'{texts[bad[0]]}' is not a class of head '{self.head}' "
                f"({', '.join(self.class_names)}); fix the value or add the class to the "
                f"head's `classes`" + more(len(bad) - 1) + tail)

    def _read_classes(self, table: pd.DataFrame, rows: np.ndarray, label_column: Optional[str],
                      class_names: Optional[List[str]]) -> List[str]:
        """Fills the one-hot labels from `label_column`; returns the bad-value problems."""
        if label_column is None:
            raise DataError(f"{self.table_file}: kind 'classification' needs label_column, "
                            f"the column of each image's class; the columns are "
                            f"{', '.join(table.columns)}")
        self._require(table, [label_column], " (label_column)")
        texts = [as_text(v) for v in table[label_column].iloc[rows].tolist()]
        known = [i for i, t in enumerate(texts) if t is not None and t not in UNKNOWN_TEXTS]
        if class_names is not None:
            self.class_names = [str(c) for c in class_names]
        else:
            present = {str(texts[i]) for i in known}
            if not present:
                return [f"{self.table_file}: column '{label_column}' has no class in split "
                        f"'{self.split}' (every value is empty or -1); give the head's "
                        "`classes`"]
            numeric = all(t.lstrip("-").isdecimal() for t in present)
            self.class_names = sorted(present, key=int if numeric else None)
        index = {c: j for j, c in enumerate(self.class_names)}
        self.labels = np.zeros((len(rows), self.num_classes), np.float32)
        self.label_mask = np.zeros_like(self.labels)
        bad = [i for i in known if texts[i] not in index]
        for i in known:
            if texts[i] in index:
                self.labels[i, index[str(texts[i])]] = 1.0
                self.label_mask[i] = 1.0
        return [self._unknown_class(texts, label_column, bad)] if bad else []

    def _tag_columns(self, table: pd.DataFrame, tag_columns: Optional[List[str]]) -> List[str]:
        """The tag columns: the named ones (each must exist) or the numeric ones."""
        if tag_columns:
            self._require(table, tag_columns, " (tag_columns)")
            return [str(c) for c in tag_columns]
        skip = {self.id_column, self.split_column}
        tags = [c for c in table.columns if c not in skip
                and (pd.api.types.is_numeric_dtype(table[c])
                     or pd.api.types.is_bool_dtype(table[c]))]
        if not tags:
            raise DataError(f"{self.table_file}: no tag column: no numeric 0/1 column besides "
                            f"'{self.id_column}' (columns: {', '.join(table.columns)}); name "
                            "them with tag_columns")
        return tags

    def _read_tags(self, table: pd.DataFrame, rows: np.ndarray, tag_columns: Optional[List[str]],
                   class_names: Optional[List[str]]) -> List[str]:
        """Fills the multi-hot labels from the tag columns; returns the bad-value problems."""
        tags = self._tag_columns(table, tag_columns)
        self.class_names = tags if class_names is None else [str(c) for c in class_names]
        unknown = [t for t in tags if t not in self.class_names]
        if unknown:
            others = ", ".join(f"'{t}'" for t in unknown[1:])
            raise DataError(f"{self.table_file}: column '{unknown[0]}': unknown tag "
                            f"'{unknown[0]}', not a tag of head '{self.head}' "
                            f"({', '.join(self.class_names)}); drop or rename the column, "
                            "pass tag_columns, or add the tag to the head's `classes`"
                            + more(len(unknown) - 1, f"columns: {others}"))
        self.labels = np.zeros((len(rows), self.num_classes), np.float32)
        self.label_mask = np.zeros_like(self.labels)
        errors = []
        for tag in tags:
            raw = table[tag].iloc[rows]
            values = tag_values(raw)
            bad = np.flatnonzero(~np.isnan(values) & (values != 0.0) & (values != 1.0))
            if len(bad):
                errors.append(f"{self.table_file}: {self.where[bad[0]]}, column '{tag}': value "
                              f"{_shown(raw.iloc[bad[0]])} is not 0/1, empty or -1"
                              + more(len(bad) - 1))
            j = self.class_names.index(tag)
            known = ~np.isnan(values)
            self.label_mask[:, j] = known
            self.labels[:, j] = np.where(known & (values == 1.0), 1.0, 0.0)
        return errors
