"""Command-line arguments shared by the export CLIs."""
import argparse

from export.graph import WEIGHT_CHOICES


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """Adds `--run` and `--weights`.

    Args:
        parser: the parser to extend.
    """
    parser.add_argument("--run", required=True, help="run folder")
    parser.add_argument("--weights", default="final", choices=WEIGHT_CHOICES,
                        help="checkpoint to use (default: best, falling back to last)")


def add_output_args(parser: argparse.ArgumentParser, what: str) -> None:
    """Adds `--out` and `--overwrite`.

    Args:
        parser: the parser to extend.
        what: what `--out` names, for the help text.
    """
    parser.add_argument("--out", required=True, help=f"{what} to create")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
