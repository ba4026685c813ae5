"""effdet_tf/darknet package."""
