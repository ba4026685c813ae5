"""notebooks/quickstart.ipynb runs top to bottom at the tiny size."""
import pytest

from tests.notebook_runner import error_outputs, execute_notebook


@pytest.mark.slow
def test_quickstart_runs(tmp_path):
    """Quickstart: sample data, train, evaluate, predict, export and verify, tiny size."""
    run_root = tmp_path / "runs"
    notebook = execute_notebook("quickstart.ipynb",
                                {"SIZE": "tiny", "RUN_ROOT": str(run_root), "INSTALL": False},
                                tmp_path)
    assert not error_outputs(notebook)
    run = run_root / "demo"
    for produced in ("predictions/composite_pred.jpg", "eval_test/metrics_test.json",
                     "export/model.onnx", "export/saved_model/saved_model.pb"):
        assert (run / produced).is_file(), produced
