"""Backbones of the detector (Keras 3, backend-neutral)."""
from effdet_tf.backbones.cspdarknet53 import build_cspdarknet53

__all__ = ["build_cspdarknet53"]
