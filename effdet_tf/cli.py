"""Command-line plumbing shared by every `python -m ...` entry point."""
import sys
from typing import Callable, Optional, Sequence

from effdet_tf.errors import EffdetError

EXIT_USAGE = 2


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
