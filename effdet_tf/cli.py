"""Command-line plumbing shared by every `python -m ...` entry point."""
import argparse
import sys
from typing import Callable, Optional, Sequence

from effdet_tf.errors import EffdetError
from effdet_tf.quiet_tf import VERBOSE_FLAG, quiet_tensorflow

EXIT_USAGE = 2
PACKAGES = ("effdet_tf", "data_pipelines", "train", "export")
# CLIs that run without TensorFlow (ONNX Runtime only); they quieten it themselves if used.
TF_FREE_MODULES = ("export.serve", "export.loadtest")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and shows each option's default value."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = (action.default not in (None, False, argparse.SUPPRESS)
                 and action.default != [] and not action.required)
        if shown and "%(default)" not in text and action.option_strings:
            text = f"{text} (default: %(default)s)".strip()
        return text


class _Parser(argparse.ArgumentParser):
    """An `ArgumentParser` whose options always get a help line (for their default)."""

    def add_argument(self, *args, **kwargs):
        """`ArgumentParser.add_argument`; an option without help still shows its default."""
        if "help" not in kwargs:
            default = kwargs.get("default")
            kwargs["help"] = ("" if default in (None, False) or default == []
                              or kwargs.get("required")
                              else "(default: %(default)s)")
        return super().add_argument(*args, **kwargs)


def make_parser(prog: str, description: Optional[str] = None,
                **kwargs) -> argparse.ArgumentParser:
    """An argument parser with the project's help format and the `--verbose` flag.

    Args:
        prog: the command as a user types it, e.g. `python -m train.fit`.
        description: help text shown above the options.
        **kwargs: more `argparse.ArgumentParser` arguments.

    Returns:
        The parser.
    """
    parser = _Parser(prog=prog, description=description, formatter_class=HelpFormatter,
                     **kwargs)
    parser.add_argument(VERBOSE_FLAG, action="store_true",
                        help="also show TensorFlow's own start-up and device log lines")
    return parser


def quiet_if_cli() -> None:
    """Quietens TensorFlow when this process is `python -m <one of our packages>...`.

    Called from each package's `__init__`, before anything imports TensorFlow; a library
    import (a notebook, a test) is left alone.
    """
    orig = getattr(sys, "orig_argv", [])
    if "-m" in orig[:-1]:
        module = orig[orig.index("-m") + 1]
        if module.split(".")[0] in PACKAGES and module not in TF_FREE_MODULES:
            quiet_tensorflow()


def run_cli(main: Callable[[Optional[Sequence[str]]], int],
            argv: Optional[Sequence[str]] = None) -> None:
    """Runs a CLI `main`, turning project errors into one line and exit code 2.

    Args:
        main: function taking the argument list and returning an exit code.
        argv: arguments; `sys.argv[1:]` when None.
    """
    try:
        code = main(argv)
    except EffdetError as err:
        print(f"error: {err}", file=sys.stderr)
        code = EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
