"""effdet_tf: a multi-head EfficientDet-D0 (CSPDarknet53 + BiFPN), Keras 3, any backend.

`build_detector`, `MultiHeadDetector` and `HeadSpec` are imported lazily so that
`import effdet_tf` (and its TensorFlow-free submodules) stays light.
"""
import importlib

from effdet_tf.cli import quiet_if_cli

quiet_if_cli()  # before anything imports TensorFlow: its start-up lines stay off

_LAZY = {
    "build_detector": "effdet_tf.detector",
    "MultiHeadDetector": "effdet_tf.detector",
    "HeadSpec": "effdet_tf.heads",
    "DetectionHead": "effdet_tf.detection_head",
    "TaskHead": "effdet_tf.heads",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    """Imports the public objects on first use (PEP 562).

    Args:
        name: attribute name.

    Returns:
        The object.

    Raises:
        AttributeError: not a public name.
    """
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'effdet_tf' has no attribute {name!r}")
