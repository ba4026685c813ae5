"""Keeps TensorFlow's native start-up log lines off the terminal unless asked for.

TensorFlow writes C++ log lines at import (oneDNN, "Could not find cuda drivers", the
absl pre-init banner) and when it looks for a GPU (`failed call to cuInit` on a CPU
machine). None of them is a problem, but they read like failures. `quiet_tensorflow()`:

- sets `TF_CPP_MIN_LOG_LEVEL=3` (native errors and below hidden) on a machine without an
  NVIDIA driver, `1` (info hidden, warnings kept) where a driver is present, so GPU
  set-up problems still show there;
- imports TensorFlow once with the process's stderr (file descriptor 2) sent to a
  temporary file: the import-time lines are dropped, and replayed if the import fails.

Nothing happens when the user set `TF_CPP_MIN_LOG_LEVEL` themselves or passed `--verbose`
on the command line. Python warnings are untouched, so the project's own warnings (and
Keras' and TensorFlow's Python-level ones that concern the user's data or model) show.

This module is TensorFlow-only by name (`*_tf.py`) but imports TensorFlow lazily, only
when it is installed.
"""
import importlib
import importlib.util
import os
import sys
import tempfile
from typing import Optional, Sequence

_NVIDIA_MARKERS = ("/proc/driver/nvidia/version", "/dev/nvidia0", "/dev/nvidiactl")
VERBOSE_FLAG = "--verbose"


def wants_native_logs(argv: Optional[Sequence[str]] = None) -> bool:
    """True when the user asked for TensorFlow's own log lines.

    Args:
        argv: command line (default `sys.argv`).

    Returns:
        Whether `TF_CPP_MIN_LOG_LEVEL` is set already or `--verbose` is on the line.
    """
    argv = sys.argv if argv is None else argv
    return "TF_CPP_MIN_LOG_LEVEL" in os.environ or VERBOSE_FLAG in list(argv)[1:]


def has_nvidia_driver() -> bool:
    """True when this machine shows an NVIDIA driver or device node."""
    return any(os.path.exists(path) for path in _NVIDIA_MARKERS)


def quiet_tensorflow(argv: Optional[Sequence[str]] = None) -> bool:
    """Hides TensorFlow's native start-up lines (see the module docstring).

    Safe to call many times; only the first call before TensorFlow's import has an effect.

    Args:
        argv: command line (default `sys.argv`).

    Returns:
        True when logs were quietened by this call.
    """
    if wants_native_logs(argv) or "tensorflow" in sys.modules:
        return False
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "1" if has_nvidia_driver() else "3"
    if importlib.util.find_spec("tensorflow") is None:
        return True
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (some notebook kernels): import as is
        importlib.import_module("tensorflow")
        return True
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            importlib.import_module("tensorflow")
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return True
