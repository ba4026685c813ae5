"""effdet_tf/backbones package."""
