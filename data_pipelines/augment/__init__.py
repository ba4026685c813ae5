"""data_pipelines/augment package."""
