"""Command-line arguments shared by the export CLIs."""
import argparse

from export.graph import WEIGHT_CHOICES


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """Adds `--run`, `--weights` and `--image-size`.

    Args:
        parser: the parser to extend.
    """
    parser.add_argument("--run", required=True, help="run folder")
    parser.add_argument("--weights", default="final", choices=WEIGHT_CHOICES,
                        help="final = model.keras at the end of training (falls back to the "
                             "last checkpoint), best or last checkpoint")
    parser.add_argument("--image-size", type=int, default=None,
                        help="input side to export at, a multiple of 128 "
                             "(None: the side the run was trained at)")


def add_output_args(parser: argparse.ArgumentParser, what: str) -> None:
    """Adds `--out` and `--overwrite`.

    Args:
        parser: the parser to extend.
        what: what `--out` names, for the help text.
    """
    parser.add_argument("--out", required=True, help=f"{what} to create")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
