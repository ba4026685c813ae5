"""notebooks/multitask.ipynb runs top to bottom on the real classification and tag sets."""
import pytest

from tests.backbones import STAND_IN_MAX_BYTES, use_stand_in
from tests.notebook_runner import error_outputs, execute_notebook


@pytest.mark.slow
@pytest.mark.real_data
def test_multitask_runs(tmp_path, shared, monkeypatch):
    """Classification + tags on the real sets: train, evaluate, predictions, export, verify.

    Its CLIs build the stand-in backbone (tests/backbones.py; the quickstart notebook's
    test keeps CSPDarknet53)."""
    run_root = tmp_path / "runs"
    use_stand_in(monkeypatch)  # the kernel and its CLI subprocesses inherit the environment
    notebook = execute_notebook(
        "multitask.ipynb",
        {"SIZE": "tiny", "RUN_ROOT": str(run_root), "INSTALL": False,
         "CLOTHING_DIR": str(shared("datasets", "clothing")),
         "CCP_DIR": str(shared("datasets", "ccp_tags"))}, tmp_path)
    assert not error_outputs(notebook)
    run = run_root / "clothing_tags"
    for produced in ("eval_test/category_test_confusion.png", "eval_test/tags_test_pr_curves.png",
                     "predict_clothing/predictions.parquet", "predict_tags/predictions.parquet",
                     "export/model.onnx", "export/preprocessing.json",
                     "category_classes.txt", "tags_classes.txt"):
        assert (run / produced).is_file(), produced
    assert (run / "model.keras").stat().st_size < STAND_IN_MAX_BYTES
