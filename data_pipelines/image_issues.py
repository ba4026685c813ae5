"""Image issues of a dataset (cleanvision): duplicates within and across splits, blurry,
dark, light, low-information, grayscale, odd size and odd aspect ratio; plus unreadable files.

Exclusion rule (`exclude` of each row, what goes to `exclude.txt`):

- an unreadable file;
- all but one image of each group of exact or near duplicates. The one kept is in the
  last split of test, val, train (so a test or val set stays the set others report on,
  and a training copy of an evaluation image goes), then the first by file name;
- a blank image (grey levels with a standard deviation under `BLANK_STD`: all black,
  all white, one flat colour), which teaches nothing.

Blurry images are those cleanvision flags plus those whose sharpness (variance of the
Laplacian at `SHARPNESS_SIDE` px) is under `BLUR_FRACTION` of the dataset's median:
cleanvision measures blur at 64 px, where a heavily blurred but colourful photo still
passes. Blurry, dark, light, low-information (little entropy: also a clean object on a white
background), grayscale, odd-size and odd-aspect images are reported and kept:
they are often real data the model will meet. Duplicates with different labels say so in
their detail (one of the two labels is wrong).
"""
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
from PIL import Image, ImageOps

from data_pipelines.inspect_catalog import Catalog, class_name, issue_row

SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}
PROPERTY_ISSUES = {
    "blurry": "blurry (little fine detail)",
    "dark": "dark (low brightness)",
    "light": "overexposed (high brightness)",
    "low_information": "low information (near-uniform, little entropy)",
    "grayscale": "grayscale",
    "odd_aspect_ratio": "unusual aspect ratio",
}
# cleanvision's odd_size flags every image off the median when most share one size (its
# IQR is 0 then), so the size rule is ours: a side (square root of the area) under a
# third, or over three times, the dataset's median.
ODD_SIZE_FACTOR = 3.0
SHARPNESS_SIDE = 256
BLUR_FRACTION = 1 / 30  # real photos of the shared sets lie above 1/10 of their median
DUPLICATE_ISSUES = ("exact_duplicates", "near_duplicates")
BLANK_STD = 3.0  # grey levels, 0..255

def _names(catalog: Catalog, rows: Sequence[int], limit: int = 3) -> str:
    files = [f"{catalog.images.at[r, 'file']} ({catalog.images.at[r, 'split']})"
             for r in rows[:limit]]
    tail = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return ", ".join(files) + tail


def _groups(sets: Sequence[Sequence[int]]) -> List[Set[int]]:
    """Merges overlapping sets (an image near-duplicate of two others joins them)."""
    groups: List[Set[int]] = []
    for members in sets:
        merged = set(members)
        for group in [g for g in groups if g & merged]:
            merged |= group
            groups.remove(group)
        groups.append(merged)
    return groups


def odd_size_rows(catalog: Catalog) -> List[Dict[str, Any]]:
    """Images whose side (root of the area) is off the median by `ODD_SIZE_FACTOR` or more."""
    images = catalog.images
    ok = images["error"].to_numpy() == ""
    side = np.sqrt(images["width"].to_numpy(float) * images["height"].to_numpy(float))
    if not ok.any():
        return []
    median = float(np.median(side[ok]))
    rows = []
    for r in np.flatnonzero(ok):
        ratio = side[r] / median
        if ratio <= 1 / ODD_SIZE_FACTOR or ratio >= ODD_SIZE_FACTOR:
            rows.append(issue_row(
                catalog, r, "odd_size", min(ratio, 1 / ratio),
                f"{images.at[r, 'width']}x{images.at[r, 'height']} px, {ratio:.2g}x the "
                f"dataset's median side ({median:.0f} px)"))
    return rows


def pixel_measures(path: str) -> Tuple[float, float]:
    """`(sharpness, spread)` of an image's grey levels at `SHARPNESS_SIDE` px (its longer
    side): the variance of the 4-neighbour Laplacian and the standard deviation; NaNs
    when unreadable."""
    try:
        with Image.open(path) as img:
            img.draft("L", (SHARPNESS_SIDE, SHARPNESS_SIDE))
            grey = ImageOps.exif_transpose(img).convert("L")
    except (OSError, ValueError):
        return float("nan"), float("nan")
    scale = SHARPNESS_SIDE / max(grey.size)
    grey = grey.resize((max(3, round(grey.width * scale)), max(3, round(grey.height * scale))),
                       Image.Resampling.BILINEAR)
    pixels = np.asarray(grey, np.float32)
    laplacian = (pixels[1:-1, :-2] + pixels[1:-1, 2:] + pixels[:-2, 1:-1] + pixels[2:, 1:-1]
                 - 4 * pixels[1:-1, 1:-1])
    return float(laplacian.var()), float(pixels.std())


def pixel_rows(catalog: Catalog, rows: Sequence[int], skip: Set[int],
               workers: int = 4) -> List[Dict[str, Any]]:
    """Blank images, and images (not in `skip`) far less sharp than the dataset's median.

    Args:
        catalog: the dataset.
        rows: the readable images.
        skip: images already reported blurry.
        workers: threads.

    Returns:
        `blank` rows (left out) and `blurry` rows (score: sharpness over the median's).
    """
    paths = [catalog.images.at[r, "path"] for r in rows]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        measures = np.array(list(pool.map(pixel_measures, paths))).reshape(-1, 2)
    values, spread = measures[:, 0], measures[:, 1]
    if not np.isfinite(values).any():
        return []
    median = float(np.nanmedian(values))
    out = []
    for r, value, std in zip(rows, values, spread):
        if std < BLANK_STD:
            out.append(issue_row(catalog, r, "blank", std / BLANK_STD,
                                 f"blank: grey levels vary by {std:.1f} (standard deviation)",
                                 exclude=True))
        elif r not in skip and np.isfinite(value) and value < BLUR_FRACTION * median:
            out.append(issue_row(catalog, r, "blurry", min(1.0, value / max(median, 1e-9)),
                                 f"blurry: sharpness {value:.1f}, under 1/"
                                 f"{round(1 / BLUR_FRACTION)} of the dataset's median "
                                 f"({median:.0f})"))
    return out


def _label_note(catalog: Catalog, members: Sequence[int]) -> str:
    """" with different labels (a, b)" when a classification duplicate set disagrees."""
    if catalog.kind != "classification":
        return ""
    labels = sorted({int(catalog.images.at[r, "label"]) for r in members})
    if len(labels) < 2:
        return ""
    return f" with different labels ({', '.join(class_name(catalog, k) for k in labels)})"


def _kept(catalog: Catalog, group: Set[int]) -> int:
    """The member of a duplicate group that stays: latest split, then first file name."""
    return min(group, key=lambda r: (-SPLIT_ORDER.get(catalog.images.at[r, "split"], 0),
                                     catalog.images.at[r, "file"]))


def duplicate_rows(catalog: Catalog, exact: Sequence[Sequence[int]],
                   near: Sequence[Sequence[int]]) -> List[Dict[str, Any]]:
    """Issue rows of duplicate sets (rows of `catalog.images`).

    Args:
        catalog: the dataset.
        exact: sets of images with identical pixels.
        near: sets of images with the same perceptual hash (they may hold exact pairs).

    Returns:
        A row per image and set: `exact_duplicate` / `near_duplicate` within a split,
        `leakage` when the set spans splits; `exclude` marks all but one of each group,
        `group` numbers the groups.
    """
    dropped: Set[int] = set()
    group_of: Dict[int, int] = {}
    for number, group in enumerate(_groups(list(exact) + list(near))):
        dropped |= group - {_kept(catalog, group)}
        group_of.update({r: number for r in group})
    exact_of = {r: set(s) for s in exact for r in s}
    rows = []
    for kind, sets in (("exact", exact), ("near", near)):
        for members in sets:
            splits = sorted({catalog.images.at[r, "split"] for r in members},
                            key=lambda s: SPLIT_ORDER.get(s, 0))
            for r in members:
                others = [o for o in members if o != r and
                          (kind == "exact" or o not in exact_of.get(r, ()))]
                if not others:
                    continue
                what = "same pixels as" if kind == "exact" else "looks like"
                detail = f"{what} {_names(catalog, others)}{_label_note(catalog, members)}"
                if len(splits) > 1:
                    name = "leakage"
                    detail += (f"; {kind} duplicate across {'/'.join(splits)}: " +
                               ("an evaluation image is also trained on" if "train" in splits
                                else "the evaluation splits share an image"))
                else:
                    name = f"{kind}_duplicate"
                detail += "; left out" if r in dropped else "; kept"
                rows.append({**issue_row(catalog, r, name, 0.0, detail, exclude=r in dropped),
                             "group": group_of[r]})
    return rows


def _imagelab(paths: List[str], n_jobs: int) -> Any:
    """Runs cleanvision's `Imagelab` on the files (every issue type)."""
    from cleanvision import Imagelab  # pylint: disable=import-outside-toplevel  # slow import

    lab = Imagelab(filepaths=paths)
    issue_types = {name: {} for name in list(PROPERTY_ISSUES) + list(DUPLICATE_ISSUES)}
    lab.find_issues(issue_types=issue_types, n_jobs=n_jobs, verbose=False)
    return lab


def find_image_issues(catalog: Catalog, n_jobs: Optional[int] = 1) -> List[Dict[str, Any]]:
    """Every image issue of a dataset, by the module's rule.

    Args:
        catalog: the dataset (`data_pipelines.inspect_catalog.build_catalog`).
        n_jobs: cleanvision's worker processes (None: one per core).

    Returns:
        Rows keyed by `inspect_catalog.ISSUE_COLUMNS`.
    """
    images = catalog.images
    rows = [issue_row(catalog, r, "unreadable", 0.0, images.at[r, "error"], exclude=True)
            for r in np.flatnonzero(images["error"].to_numpy() != "")]
    rows += odd_size_rows(catalog)
    readable = np.flatnonzero(images["error"].to_numpy() == "")
    if readable.size == 0:
        return rows
    paths = [os.path.abspath(images.at[r, "path"]) for r in readable]
    lab = _imagelab(paths, n_jobs or os.cpu_count() or 1)
    row_of = dict(zip(paths, readable.tolist()))
    found = lab.issues
    for name, text in PROPERTY_ISSUES.items():
        flagged = found[found[f"is_{name}_issue"]]
        for path, score in flagged[f"{name}_score"].items():
            rows.append(issue_row(catalog, row_of[path], name, score,
                                  f"{text}: cleanvision score {score:.3f}"))
    flagged_blurry = {r["file"] for r in rows if r["issue"] == "blurry"}
    rows += pixel_rows(catalog, readable.tolist(),
                        {r for r in readable if images.at[r, "file"] in flagged_blurry})
    sets = {kind: [[row_of[p] for p in members] for members in lab.info[kind]["sets"]]
            for kind in DUPLICATE_ISSUES}
    rows += duplicate_rows(catalog, sets["exact_duplicates"], sets["near_duplicates"])
    return rows
