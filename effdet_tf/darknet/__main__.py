"""Entry point of `python -m effdet_tf.darknet convert|inspect`."""
from effdet_tf.cli import run_cli
from effdet_tf.darknet.commands import main

if __name__ == "__main__":
    run_cli(main)
