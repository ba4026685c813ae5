"""data_pipelines package."""
