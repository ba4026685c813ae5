"""Up-front checks of a COCO dataset: every problem listed, each naming the file and id."""
import dataclasses
import json
import numbers
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Mapping, Optional, Sequence

from tqdm import tqdm

from effdet_tf.errors import DataError
from data_pipelines.decode import ImageInfo, probe_image

REQUIRED_KEYS = ("images", "annotations", "categories")
# Problem kinds: "error" always fails; "corrupt" fails or is skipped (on_corrupt);
# "warning" is reported and never fails.
KINDS = ("error", "corrupt", "warning")
ON_CORRUPT = ("fail", "skip")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset.

    Attributes:
        kind: "error", "corrupt" (an unreadable image) or "warning".
        message: what is wrong, naming the file and the offending id.
        image_id: the image concerned, when there is one.
    """

    kind: str
    message: str
    image_id: Optional[int] = None

    def __str__(self) -> str:
        return self.message


def load_json(annotation_file: str) -> Dict[str, Any]:
    """Reads a COCO json file.

    Args:
        annotation_file: path of the json.

    Returns:
        The parsed object.

    Raises:
        DataError: the file is missing, not json, or not a json object.
    """
    try:
        with open(annotation_file, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError as err:
        raise DataError(f"{annotation_file}: annotation file not found") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{annotation_file}: not readable as json ({err})") from err
    if not isinstance(data, dict):
        raise DataError(f"{annotation_file}: not a COCO file (top level is "
                        f"{type(data).__name__}, expected an object)")
    return data


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_ids(items: Sequence[Any], what: str, where: str) -> List[Problem]:
    """Checks that each item is an object with a unique integer id."""
    problems, seen = [], set()
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("id"), int):
            problems.append(Problem("error", f"{where}: {what}[{i}] has no integer id"))
            continue
        if item["id"] in seen:
            problems.append(Problem("error", f"{where}: duplicate {what[:-1]} id {item['id']}"))
        seen.add(item["id"])
    return problems


def _check_image_entry(img: Dict[str, Any], where: str) -> List[Problem]:
    problems = []
    if not isinstance(img.get("file_name"), str):
        problems.append(Problem("error", f"{where}: image id {img['id']} has no file_name"))
    for key in ("width", "height"):
        if key in img and (not _is_number(img[key]) or img[key] <= 0):
            problems.append(Problem(
                "error", f"{where}: image id {img['id']} has bad {key} {img[key]!r}"))
    return problems


def _check_annotation(ann: Dict[str, Any], image_ids: set, category_ids: set,
                      where: str) -> List[Problem]:
    aid = ann["id"]
    problems = []
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        problems.append(Problem("error", f"{where}: annotation id {aid}: bbox {bbox!r} "
                                         "is not 4 numbers [x, y, w, h]"))
    elif bbox[2] <= 0 or bbox[3] <= 0:
        problems.append(Problem("error", f"{where}: annotation id {aid}: bbox {bbox!r} has "
                                         "zero or negative width or height"))
    if ann.get("image_id") not in image_ids:
        problems.append(Problem("error", f"{where}: annotation id {aid} refers to unknown "
                                         f"image id {ann.get('image_id')!r}"))
    if ann.get("category_id") not in category_ids:
        problems.append(Problem("error", f"{where}: annotation id {aid} has unknown "
                                         f"category id {ann.get('category_id')!r}"))
    return problems


def check_structure(data: Mapping[str, Any], annotation_file: str) -> List[Problem]:
    """Checks the json structure of a COCO dataset (no image files read).

    Args:
        data: the parsed json.
        annotation_file: its path, named in every message.

    Returns:
        Every problem found.
    """
    where = annotation_file
    problems = []
    for key in REQUIRED_KEYS:
        if key not in data:
            problems.append(Problem("error", f"{where}: not a COCO file, missing key '{key}'"))
        elif not isinstance(data[key], list):
            problems.append(Problem("error", f"{where}: '{key}' is not a list"))
    images = data.get("images") if isinstance(data.get("images"), list) else []
    anns = data.get("annotations") if isinstance(data.get("annotations"), list) else []
    cats = data.get("categories") if isinstance(data.get("categories"), list) else []
    problems += _check_ids(cats, "categories", where)
    problems += _check_ids(images, "images", where)
    problems += _check_ids(anns, "annotations", where)
    for img in images:
        if isinstance(img, dict) and isinstance(img.get("id"), int):
            problems += _check_image_entry(img, where)
    image_ids = {img.get("id") for img in images if isinstance(img, dict)}
    category_ids = {c.get("id") for c in cats if isinstance(c, dict)}
    for ann in anns:
        if isinstance(ann, dict) and isinstance(ann.get("id"), int):
            problems += _check_annotation(ann, image_ids, category_ids, where)
    return problems


def usable_images(data: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The image entries that have an integer id and a file name (first of each id).

    Args:
        data: the parsed json.

    Returns:
        Image entries, in file order.
    """
    images = data.get("images") if isinstance(data.get("images"), list) else []
    out, seen = [], set()
    for img in images:
        if (isinstance(img, dict) and isinstance(img.get("id"), int)
                and isinstance(img.get("file_name"), str) and img["id"] not in seen):
            out.append(img)
            seen.add(img["id"])
    return out


def probe_all(paths: Sequence[str], workers: int = 4,
              desc: Optional[str] = None) -> List[ImageInfo]:
    """Probes many image files with PIL in a thread pool (PIL decodes without the GIL).

    Args:
        paths: image files.
        workers: threads.
        desc: label of a progress bar (None: no bar).

    Returns:
        One `ImageInfo` per path, in order.
    """
    with ThreadPoolExecutor(max_workers=workers) as pool:
        infos = pool.map(probe_image, paths)
        if desc is not None:
            infos = tqdm(infos, total=len(paths), desc=desc, unit="img", leave=False,
                         mininterval=1.0)
        return list(infos)


def check_images(images: Sequence[Mapping[str, Any]], infos: Sequence[ImageInfo],
                 annotation_file: str, image_dir: str) -> List[Problem]:
    """Turns per-file probe results into problems.

    Args:
        images: the json's image entries (with id, file_name and maybe width/height).
        infos: `probe_image` result for each entry.
        annotation_file: named in the messages.
        image_dir: the image folder.

    Returns:
        Missing and corrupt files, and declared sizes that differ from the real ones
        (the latter as warnings).
    """
    problems = []
    for img, info in zip(images, infos):
        iid = img["id"]
        path = os.path.join(image_dir, img["file_name"])
        if info.error == "file is missing":
            problems.append(Problem("error", f"{annotation_file}: image id {iid}: file {path} "
                                             "is missing", iid))
        elif info.error:
            problems.append(Problem("corrupt", f"{annotation_file}: image id {iid}: file {path}:"
                                               f" {info.error}", iid))
        elif (img.get("width"), img.get("height")) != (info.width, info.height) \
                and "width" in img and "height" in img:
            problems.append(Problem(
                "warning", f"{annotation_file}: image id {iid}: declared size "
                           f"{img['width']}x{img['height']} differs from file {path} "
                           f"({info.width}x{info.height} after EXIF orientation)", iid))
    return problems


def _box_extent(ann: Any) -> Optional[List[float]]:
    """`[x0, y0, x1, y1]` of a well-formed positive-size bbox, else None."""
    bbox = ann.get("bbox") if isinstance(ann, dict) else None
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        return None
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h] if w > 0 and h > 0 else None


def check_boxes(data: Mapping[str, Any], images: Sequence[Mapping[str, Any]],
                infos: Sequence[ImageInfo], annotation_file: str) -> List[Problem]:
    """Checks every box against the real size of its image.

    A box lying wholly outside its image is an error (its object cannot be seen, and the
    image would train as background); boxes that only overhang an edge are clipped when
    the dataset is read, and counted in one warning.

    Args:
        data: the parsed json.
        images: the usable image entries.
        infos: `probe_image` result for each entry (the size after EXIF orientation).
        annotation_file: named in the messages.

    Returns:
        The problems found.
    """
    sizes = {img["id"]: (info.width, info.height) for img, info in zip(images, infos)
             if not info.error}
    problems, clipped = [], 0
    for ann in data.get("annotations") or []:
        extent = _box_extent(ann)
        size = sizes.get(ann.get("image_id")) if extent else None
        if size is None:
            continue
        x0, y0, x1, y1 = extent
        width, height = size
        if x0 >= width or y0 >= height or x1 <= 0 or y1 <= 0:
            problems.append(Problem(
                "error", f"{annotation_file}: annotation id {ann['id']}: bbox {ann['bbox']!r} "
                         f"lies wholly outside its image (id {ann['image_id']}, "
                         f"{width}x{height} px)", ann["image_id"]))
        elif x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            clipped += 1
    if clipped:
        noun = "box overhangs" if clipped == 1 else "boxes overhang"
        problems.append(Problem("warning", f"{annotation_file}: {clipped} {noun} the image "
                                           "edge and will be clipped to it"))
    return problems


def format_problems(problems: Sequence[Any], annotation_file: str) -> str:
    """One message: a summary line "N problems in FILE", then one line per problem.

    Args:
        problems: `Problem`s or strings.
        annotation_file: the file named in the summary.

    Returns:
        The message text.
    """
    noun = "problem" if len(problems) == 1 else "problems"
    lines = [f"{len(problems)} {noun} in {annotation_file}"]
    lines += [f"  - {p}" for p in problems]
    return "\n".join(lines)


def corrupt_to_skip(problems: Sequence[Problem], on_corrupt: str, origin: str) -> List[Any]:
    """Raises on the fatal problems of a source; returns the images to skip.

    Args:
        problems: every problem of the source.
        on_corrupt: "fail" (a corrupt image is fatal) or "skip" (it is left out).
        origin: the file named in the error.

    Returns:
        The `image_id` of every corrupt image.

    Raises:
        DataError: listing every error (and corrupt image, with "fail").
        ValueError: `on_corrupt` is not "fail" or "skip".
    """
    if on_corrupt not in ON_CORRUPT:
        raise ValueError(f"on_corrupt must be one of {ON_CORRUPT}, not {on_corrupt!r}")
    raise_if_problems([p for p in problems
                       if p.kind == "error" or (p.kind == "corrupt" and on_corrupt == "fail")],
                      origin)
    return [p.image_id for p in problems if p.kind == "corrupt"]


def raise_if_problems(problems: Sequence[Any], annotation_file: str) -> None:
    """Raises one `DataError` listing every problem, if there is any.

    Args:
        problems: `Problem`s or strings.
        annotation_file: the file named in the summary line.

    Raises:
        DataError: when `problems` is not empty.
    """
    if problems:
        raise DataError(format_problems(problems, annotation_file))
