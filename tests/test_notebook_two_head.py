"""notebooks/two_head_experiment.ipynb runs top to bottom on the real detection sets."""
import pytest

from tests.backbones import STAND_IN_MAX_BYTES, use_stand_in
from tests.notebook_runner import error_outputs, execute_notebook


@pytest.mark.slow
@pytest.mark.real_data
def test_two_head_experiment_runs(tmp_path, shared, monkeypatch):
    """Experiment on the real datasets: preview, two-head, baselines, compare, predict.

    Its CLIs build the stand-in backbone (tests/backbones.py; the quickstart notebook's
    test keeps CSPDarknet53)."""
    use_stand_in(monkeypatch)  # the kernel and its CLI subprocesses inherit the environment
    fruits = shared("datasets", "fruits")
    household = shared("datasets", "household")
    run_root = tmp_path / "runs"
    notebook = execute_notebook(
        "two_head_experiment.ipynb",
        {"SIZE": "tiny", "RUN_ROOT": str(run_root), "FRUITS_DIR": str(fruits),
         "HOUSEHOLD_DIR": str(household), "YOLOV4_WEIGHTS": None}, tmp_path)
    assert not error_outputs(notebook)
    for produced in ("preview/fruits_batch0.png", "preview/household_batch0.png",
                     "compare/comparison.md", "compare/comparison.png",
                     "compare/single_fruits_s0/summary.json", "predictions/composite_pred.jpg"):
        assert (run_root / produced).is_file(), produced
    assert (run_root / "compare" / "single_fruits_s0" / "model.keras").stat().st_size < (
        STAND_IN_MAX_BYTES)
