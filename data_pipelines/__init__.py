"""data_pipelines package."""
from effdet_tf.cli import quiet_if_cli

quiet_if_cli()  # before anything imports TensorFlow: its start-up lines stay off
