"""The shared CLI plumbing: help with defaults, `--verbose`, TensorFlow's start-up lines."""
import os
import subprocess
import sys

import pytest

from effdet_tf.cli import make_parser
from effdet_tf.quiet_tf import wants_native_logs
from tests.conftest import REPO_ROOT

NATIVE_MARKERS = ("I0000", "E0000", "W0000", "absl::InitializeLog")


def test_help_shows_defaults_and_verbose(capsys):
    """Every option with a default shows it; required and unset ones do not."""
    parser = make_parser("python -m demo", description="Demo.")
    parser.add_argument("--score", type=float, default=0.3, help="minimum score")
    parser.add_argument("--weights", default="final", choices=("best", "final"))
    parser.add_argument("--run", required=True, help="run folder")
    parser.add_argument("--out", default=None, help="output folder")
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "minimum score (default: 0.3)" in text
    assert "(default: final)" in text and "--verbose" in text
    assert "run folder (default" not in text and "output folder (default" not in text
    assert parser.parse_args(["--run", "r", "--verbose"]).verbose


def test_verbose_or_own_level_keeps_native_logs(monkeypatch):
    """--verbose on the command line, or a TF_CPP_MIN_LOG_LEVEL of the user's, wins."""
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    assert not wants_native_logs(["prog", "--run", "x"])
    assert wants_native_logs(["prog", "--run", "x", "--verbose"])
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    assert wants_native_logs(["prog"])


def _model_stats(*extra):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "effdet_tf.model_stats", "--image-size", "128",
                           "--no-latency", "--heads", "a=1", *extra], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_cli_hides_tensorflow_start_up_lines_unless_verbose():
    """A CLI that builds a model prints no TensorFlow/absl/CUDA line on stderr; with
    --verbose TensorFlow's own lines come back."""
    quiet = _model_stats()
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "a=1" not in quiet.stderr and "backbone" in quiet.stdout
    assert not [m for m in NATIVE_MARKERS if m in quiet.stderr], quiet.stderr[-2000:]
    loud = _model_stats("--verbose")
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert any(m in loud.stderr for m in NATIVE_MARKERS), loud.stderr[-2000:]
