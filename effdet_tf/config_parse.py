"""Reading config values: dataclasses built from YAML mappings with type checks, and
`--set key=value` overrides applied to the nested mapping first."""
import dataclasses
import types
import typing
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import yaml

from effdet_tf.errors import ConfigError


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce_container(value: Any, tp: Any, where: str, choices: Mapping) -> Any:
    """Checks a list, dict or nested dataclass value against `tp`."""
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return build_dataclass(tp, value, where, choices)
    if typing.get_origin(tp) in (list, List):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{where}[{i}]", choices) for i, v in enumerate(value)]
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    _, val_tp = typing.get_args(tp)
    return {str(k): _coerce(v, val_tp, f"{where}.{k}", choices) for k, v in value.items()}


def _coerce(value: Any, tp: Any, where: str, choices: Mapping) -> Any:
    """Checks `value` against the type hint `tp`, converting where it is lossless."""
    if tp is Any:  # free-form values (a head's options), checked by their consumer
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        none_type = types.NoneType
        if value is None and none_type in args:
            return None
        inner = [a for a in args if a is not none_type]
        return _coerce(value, inner[0], where, choices)
    if dataclasses.is_dataclass(tp) or origin in (list, List, dict, Dict):
        return _coerce_container(value, tp, where, choices)
    return _coerce_scalar(value, tp, where)


def _coerce_scalar(value: Any, tp: Any, where: str) -> Any:
    """Checks a scalar; ints pass as floats, numbers as strings, `1e-3` text as a float."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    converted = value
    if tp is float and is_number:
        converted = float(value)
    elif tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads `1e-3` (no dot) as a string
            converted = float(value)
        except ValueError:
            pass
    elif tp is str and is_number:
        converted = str(value)
    if not isinstance(converted, tp) or (tp is int and isinstance(converted, bool)):
        raise ConfigError(
            f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return converted


def build_dataclass(cls: Any, values: Dict[str, Any], where: str,
                    choices: Mapping[str, Tuple[str, ...]]) -> Any:
    """Builds dataclass `cls` from a mapping, checking keys, types and `choices`.

    Args:
        cls: the dataclass.
        values: key -> value, as read from YAML.
        where: dotted path of `values` in the whole config ('' at the top).
        choices: dotted key -> allowed values.

    Returns:
        The dataclass instance.

    Raises:
        ConfigError: an unknown key, a wrong type or a value outside its choices.
    """
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown key '{prefix}{unknown[0]}' (known keys: {', '.join(sorted(known))})")
    kwargs = {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else key
        kwargs[key] = _coerce(value, hints[key], path, choices)
        if path in choices and kwargs[key] not in choices[path]:
            raise ConfigError(
                f"{path}: {kwargs[key]!r} is not one of {', '.join(choices[path])}")
    return cls(**kwargs)


def set_path(tree: Dict[str, Any], dotted: str, value: Any) -> None:
    """Sets `a.b.0.c=value` in a nested dict/list tree, creating mappings as needed."""
    parts = dotted.split(".")
    node: Any = tree
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {dotted}: '{part}' is not an index of that list")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
            continue
        if last:
            node[part] = value
        else:
            node = node.setdefault(part, {})
            if node is None:
                raise ConfigError(f"--set {dotted}: '{part}' is empty, cannot set below it")


def parse_overrides(overrides: Sequence[str]) -> List[Tuple[str, Any]]:
    """Parses `key=value` strings; values are read as YAML (`3`, `true`, `[1, 2]`, `null`).

    Args:
        overrides: strings such as `train.epochs=3`.

    Returns:
        `(dotted_key, value)` pairs.

    Raises:
        ConfigError: an override has no `=` or an unreadable value.
    """
    pairs = []
    for text in overrides:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {text!r}: expected key=value, e.g. train.epochs=3")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {text!r}: value is not valid YAML ({err})") from err
        pairs.append((key.strip(), value))
    return pairs
