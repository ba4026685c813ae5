"""The naming rule shared by heads and datasets, and the registry of head kinds.

Both are plain Python (no Keras), so a config is checked completely, and fast, before
anything is built.
"""
import re

from effdet_tf.errors import ConfigError

NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

# Head kind -> "module:class" of its `TaskHead`, imported when a model is built.
HEAD_KINDS = {
    "detection": "effdet_tf.detection_head:DetectionHead",
    "classification": "effdet_tf.classification_head:ClassificationHead",
    "multilabel": "effdet_tf.multilabel_head:MultiLabelHead",
}
# Kinds that predict one label row per image (`labels/<head>`), not boxes.
IMAGE_LEVEL_KINDS = ("classification", "multilabel")


def check_name(name: object, what: str) -> str:
    """Returns `name` if it is a valid head or dataset name.

    Args:
        name: the name to check.
        what: where it comes from, for the error (e.g. "data.datasets[0].name").

    Returns:
        The name.

    Raises:
        ConfigError: not a string starting with a letter and holding only letters,
            digits and `_`.
    """
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ConfigError(f"{what}: {name!r} must start with a letter and hold only "
                          "letters, digits and '_'")
    return name


def check_kind(kind: object, what: str) -> str:
    """Returns `kind` if it is a registered head kind.

    Raises:
        ConfigError: an unknown kind, naming the known ones.
    """
    if kind not in HEAD_KINDS:
        raise ConfigError(f"{what}: kind {kind!r} unknown, expected one of "
                          f"{', '.join(sorted(HEAD_KINDS))}")
    return str(kind)
