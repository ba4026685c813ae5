"""Darknet `.weights` files: the header and the float32 payload, with exact byte accounting.

Layout: int32 major, minor, revision; `seen` (images trained on) as uint64 when
`major * 10 + minor >= 2` (and both < 1000, as Darknet checks), else uint32; then
little-endian float32 values, convolution after convolution in cfg order.
"""
import dataclasses
import os
from typing import Optional, Union

import numpy as np

from effdet_tf.errors import DarknetError

PathLike = Union[str, os.PathLike]


@dataclasses.dataclass(frozen=True)
class WeightsHeader:
    """The header of a `.weights` file.

    Attributes:
        major: format major version.
        minor: format minor version.
        revision: format revision.
        seen: images seen in training.
        size: header size in bytes (20 with a 64-bit `seen`, 16 with a 32-bit one).
    """

    major: int
    minor: int
    revision: int
    seen: int
    size: int

    def __str__(self) -> str:
        return (f"version {self.major}.{self.minor}.{self.revision}, seen {self.seen:,}, "
                f"header {self.size} bytes")


def read_header(path: PathLike) -> WeightsHeader:
    """Reads the header of a `.weights` file.

    Args:
        path: the file.

    Returns:
        The header.

    Raises:
        DarknetError: the file cannot be read or is shorter than its header.
    """
    name = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(20)
    except OSError as err:
        raise DarknetError(f"cannot read weights {name}: {err.strerror}") from None
    if len(head) < 12:
        raise DarknetError(f"{name}: truncated header: the file has {len(head)} bytes, "
                           "a Darknet header needs at least 12 (major, minor, revision)")
    major, minor, revision = (int(v) for v in np.frombuffer(head[:12], dtype="<i4"))
    wide = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    size = 20 if wide else 16
    if len(head) < size:
        raise DarknetError(f"{name}: truncated header: the file has {len(head)} bytes, "
                           f"version {major}.{minor}.{revision} needs {size}")
    seen = int(np.frombuffer(head[12:size], dtype="<u8" if wide else "<u4")[0])
    return WeightsHeader(major, minor, revision, seen, size)


def expect_size(path: PathLike, header: WeightsHeader, num_floats: int, *,
                exact: bool, cfg_path: Optional[PathLike] = None) -> int:
    """Checks the file size against the float count a cfg implies.

    Args:
        path: the weights file.
        header: its header.
        num_floats: float32 values the cfg's layers read.
        exact: True when the file must end right after those values (the whole cfg);
            False when more may follow (`upto`).
        cfg_path: the cfg the float count comes from, named in the message.

    Returns:
        The number of bytes left unread after those values.

    Raises:
        DarknetError: the file is shorter (or, when `exact`, longer) than expected; the
            message names the file, the cfg and both byte counts.
    """
    name = os.fspath(path)
    actual = os.path.getsize(path)
    expected = header.size + 4 * num_floats
    if actual < expected or (exact and actual != expected):
        what = "shorter" if actual < expected else "longer"
        scope = "its layers" if exact else "the requested layers"
        cfg = f"the cfg {os.fspath(cfg_path)}" if cfg_path is not None else "the model"
        raise DarknetError(
            f"the weights file {name} does not match {cfg}: {scope} need {expected:,} bytes "
            f"({header.size}-byte header + {num_floats:,} float32), the file has "
            f"{actual:,} bytes ({actual - expected:+,}, {what}); use the cfg the weights "
            "were trained with")
    return actual - expected


def read_floats(path: PathLike, header: WeightsHeader, num_floats: int) -> np.ndarray:
    """Reads the first `num_floats` float32 values after the header in one call.

    Args:
        path: the weights file.
        header: its header.
        num_floats: how many values.

    Returns:
        A float32 array of length `num_floats`.

    Raises:
        DarknetError: fewer values could be read.
    """
    values = np.fromfile(path, dtype="<f4", count=num_floats, offset=header.size)
    if values.size != num_floats:
        raise DarknetError(f"{os.fspath(path)}: read {values.size:,} float32 values, "
                           f"expected {num_floats:,}")
    return values.astype(np.float32, copy=False)
