"""Fetch a Darknet `.weights` file on request, checked by size and byte accounting.

Nothing in the project downloads by itself: this runs only as
`python -m effdet_tf.darknet download --cfg yolov4.cfg --out yolov4.weights`. The file is
streamed to `<out>.part`, then checked before it is renamed into place:

1. its size against `expected_size` (257,717,640 bytes for the official yolov4.weights);
2. its header, and the exact byte accounting against the cfg (every float32 the cfg's
   layers read, nothing more), as `convert` does.

On any failure the partial file is removed and nothing is left at `out`.
"""
import os
import shutil
import urllib.error
import urllib.request
from typing import Optional, Union

from effdet_tf.darknet.cfg import parse_cfg
from effdet_tf.darknet.layout import plan_layers, total_floats
from effdet_tf.darknet.weights import expect_size, read_header
from effdet_tf.errors import DarknetError

PathLike = Union[str, "os.PathLike[str]"]
# The official release of AlexeyAB/darknet (the YOLOv4 COCO weights) and its size.
YOLOV4_URL = ("https://github.com/AlexeyAB/darknet/releases/download/"
              "darknet_yolo_v3_optimal/yolov4.weights")
YOLOV4_BYTES = 257_717_640
_CHUNK = 1 << 20


def _stream(url: str, part: str, progress: bool, timeout: float) -> int:
    """Copies `url` into the file `part`; returns the bytes written."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            total = int(response.headers.get("Content-Length") or 0) or None
            meter = None
            if progress:
                from tqdm import tqdm  # pylint: disable=import-outside-toplevel  # CLI only
                meter = tqdm(total=total, unit="B", unit_scale=True, desc="download",
                           leave=False)
            written = 0
            with open(part, "wb") as sink:
                while chunk := response.read(_CHUNK):
                    sink.write(chunk)
                    written += len(chunk)
                    if meter is not None:
                        meter.update(len(chunk))
            if meter is not None:
                meter.close()
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise DarknetError(f"{url}: download failed ({err})") from err
    return written


def check_weights_file(path: PathLike, cfg_path: PathLike,
                       expected_size: Optional[int] = None) -> int:
    """Checks a `.weights` file's size and exact byte accounting against its cfg.

    Args:
        path: the weights file.
        cfg_path: the cfg it belongs to.
        expected_size: the size it must have, or None to skip that check.

    Returns:
        The number of float32 values the cfg reads.

    Raises:
        DarknetError: a wrong size, a bad header, or bytes that do not add up.
    """
    size = os.path.getsize(path)
    if expected_size is not None and size != expected_size:
        raise DarknetError(f"{os.fspath(path)}: {size:,} bytes, expected {expected_size:,} "
                           "(an incomplete or different file)")
    plans = [p for p in plan_layers(parse_cfg(cfg_path)) if p.conv is not None]
    num_floats = total_floats(plans)
    expect_size(path, read_header(path), num_floats, exact=True, cfg_path=cfg_path)
    return num_floats


def download_weights(url: str, out: PathLike, cfg_path: PathLike, *,
                     expected_size: Optional[int] = YOLOV4_BYTES, overwrite: bool = False,
                     progress: bool = True, timeout: float = 60.0) -> int:
    """Downloads a Darknet `.weights` file and keeps it only if it checks out.

    Args:
        url: where to fetch it (`https://...`, or `file://...` for a local copy).
        out: destination file.
        cfg_path: the cfg the weights belong to (for the byte accounting).
        expected_size: required size in bytes, or None to rely on the accounting alone.
        overwrite: replace an existing `out`.
        progress: show a progress bar.
        timeout: seconds to wait for the server to answer.

    Returns:
        The size of the checked file in bytes.

    Raises:
        DarknetError: `out` exists (without `overwrite`), the download failed, or the file
            failed a check; nothing is left at `out` or `<out>.part` then.
    """
    out = os.fspath(out)
    if os.path.exists(out) and not overwrite:
        raise DarknetError(f"{out} exists; pass --overwrite to replace it")
    parse_cfg(cfg_path)  # a bad cfg is refused before any byte is fetched
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    part = out + ".part"
    try:
        written = _stream(url, part, progress, timeout)
        check_weights_file(part, cfg_path, expected_size)
        shutil.move(part, out)
    finally:
        if os.path.exists(part):
            os.remove(part)
    return written
