"""effdet_tf package."""
