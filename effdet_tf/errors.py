"""Error types shared by every package: one clear message, no traceback for users; and
warnings printed once per process."""
import sys

_REPORTED: set = set()


def report_once(message: str) -> None:
    """Prints a warning to stderr the first time this process meets it."""
    if message not in _REPORTED:
        _REPORTED.add(message)
        print(message, file=sys.stderr, flush=True)


class EffdetError(Exception):
    """Base class of every error this project reports to a user as one line."""


class ConfigError(EffdetError):
    """A config file, key or value is wrong (the message names the file and key)."""


class DataError(EffdetError):
    """A dataset file is missing or malformed (the message names the file and id)."""


class DarknetError(EffdetError):
    """A Darknet cfg or weights file does not match (the message names the file)."""


class ExportError(EffdetError):
    """An export, or its verification, failed (the message says what differs)."""
