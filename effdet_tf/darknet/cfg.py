"""Darknet `.cfg` parser: `[net]` options and the layer sections, with line numbers.

Follows Darknet's reader: whitespace is removed everywhere in a line (so `anchors = 1, 2`
reads as `anchors=1,2`), lines starting with `#` or `;` are comments, and layers are indexed
from 0 over the sections after `[net]`.
"""
import dataclasses
import os
from typing import Dict, List, Optional, Union

from effdet_tf.errors import DarknetError

PathLike = Union[str, os.PathLike]

# Section names Darknet accepts for each layer type this package builds.
SECTION_ALIASES: Dict[str, str] = {
    "net": "net", "network": "net",
    "convolutional": "convolutional", "conv": "convolutional",
    "route": "route",
    "shortcut": "shortcut",
    "maxpool": "maxpool", "max": "maxpool",
    "upsample": "upsample",
    "dropout": "dropout",
    "yolo": "yolo",
    "avgpool": "avgpool", "avg": "avgpool",
    "softmax": "softmax", "soft": "softmax",
}


@dataclasses.dataclass
class Section:
    """One `[type]` section of a cfg file.

    Attributes:
        type: canonical layer type (`convolutional`, `route`, ...; aliases resolved).
        line: 1-based line number of the `[type]` header.
        options: `key -> raw string value`, whitespace removed.
        index: Darknet layer index (0 for the first section after `[net]`; -1 for `[net]`).
        path: the cfg file, for error messages.
    """

    type: str
    line: int
    options: Dict[str, str]
    index: int = -1
    path: str = ""

    def where(self) -> str:
        """Returns `"<file>: [type] at line N (layer I)"` for error messages."""
        layer = f" (layer {self.index})" if self.index >= 0 else ""
        return f"{self.path}: [{self.type}] at line {self.line}{layer}"

    def _raw(self, key: str) -> Optional[str]:
        return self.options.get(key)

    def get_int(self, key: str, default: Optional[int] = None) -> int:
        """Returns an integer option.

        Args:
            key: option name.
            default: value when absent; `None` makes the option required.

        Returns:
            The value.

        Raises:
            DarknetError: the option is missing (and required) or not an integer.
        """
        raw = self._raw(key)
        if raw is None:
            if default is None:
                raise DarknetError(f"{self.where()}: missing option '{key}'")
            return default
        try:
            return int(raw)
        except ValueError:
            raise DarknetError(
                f"{self.where()}: option '{key}={raw}' is not an integer") from None

    def get_float(self, key: str, default: float) -> float:
        """Returns a float option, or `default` when absent.

        Args:
            key: option name.
            default: value when absent.

        Returns:
            The value.

        Raises:
            DarknetError: the value is not a number.
        """
        raw = self._raw(key)
        if raw is None:
            return default
        try:
            return float(raw)
        except ValueError:
            raise DarknetError(f"{self.where()}: option '{key}={raw}' is not a number") from None

    def get_str(self, key: str, default: str) -> str:
        """Returns a string option, or `default` when absent.

        Args:
            key: option name.
            default: value when absent.

        Returns:
            The value.
        """
        raw = self._raw(key)
        return default if raw is None else raw

    def get_ints(self, key: str) -> List[int]:
        """Returns a required comma-separated list of integers (e.g. `layers=-1,-7`).

        Args:
            key: option name.

        Returns:
            The integers.

        Raises:
            DarknetError: the option is missing or holds a non-integer.
        """
        raw = self._raw(key)
        if raw is None or raw == "":
            raise DarknetError(f"{self.where()}: missing option '{key}'")
        try:
            return [int(v) for v in raw.split(",") if v != ""]
        except ValueError:
            raise DarknetError(
                f"{self.where()}: option '{key}={raw}' is not a list of integers") from None


@dataclasses.dataclass
class DarknetCfg:
    """A parsed cfg file.

    Attributes:
        path: the file it was read from.
        net: the `[net]` section (input size, training options).
        layers: the layer sections in order; `layers[i].index == i`.
    """

    path: str
    net: Section
    layers: List[Section]

    @property
    def input_shape(self):
        """`(height, width, channels)` from `[net]` (Darknet defaults 0 when absent)."""
        return (self.net.get_int("height", 0), self.net.get_int("width", 0),
                self.net.get_int("channels", 3))


def parse_cfg_text(text: str, path: str = "<cfg>") -> DarknetCfg:
    """Parses cfg text.

    Args:
        text: the file's content.
        path: file name used in error messages.

    Returns:
        The parsed cfg.

    Raises:
        DarknetError: unknown section type, option outside a section or without `=`,
            a first section other than `[net]`, or no layers.
    """
    sections: List[Section] = []
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = "".join(raw_line.split())
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            if not line.endswith("]"):
                raise DarknetError(f"{path}: line {number}: malformed section header {raw_line!r}")
            name = line[1:-1].lower()
            if name not in SECTION_ALIASES:
                raise DarknetError(
                    f"{path}: unknown or unsupported section [{name}] at line {number} "
                    f"(supported: {', '.join(sorted(set(SECTION_ALIASES.values())))})")
            sections.append(Section(SECTION_ALIASES[name], number, {}, path=path))
            continue
        if not sections:
            raise DarknetError(f"{path}: line {number}: option {raw_line!r} before any section")
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise DarknetError(f"{path}: line {number}: expected 'key=value', got {raw_line!r}")
        sections[-1].options[key] = value
    if not sections or sections[0].type != "net":
        raise DarknetError(f"{path}: the first section must be [net] or [network]")
    layers = sections[1:]
    if not layers:
        raise DarknetError(f"{path}: no layers after [net]")
    for index, section in enumerate(layers):
        if section.type == "net":
            raise DarknetError(f"{section.where()}: [net] may only be the first section")
        section.index = index
    return DarknetCfg(path=path, net=sections[0], layers=layers)


def parse_cfg(path: PathLike) -> DarknetCfg:
    """Reads and parses a Darknet cfg file.

    Args:
        path: the `.cfg` file.

    Returns:
        The parsed cfg.

    Raises:
        DarknetError: the file cannot be read or is malformed (see `parse_cfg_text`).
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError as err:
        raise DarknetError(f"cannot read cfg {os.fspath(path)}: {err.strerror}") from None
    return parse_cfg_text(text, os.fspath(path))
