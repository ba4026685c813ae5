"""Runs a notebook top to bottom with injected parameters, for the notebook tests.

Each notebook's execution test lives in its own file (`test_notebook_<name>.py`) so that
pytest-xdist's `--dist loadfile` can put the long ones on different workers.

The notebooks execute with nbclient in a fresh `python3` kernel (jupyter_client falls back to
the running interpreter's ipykernel when no kernel spec is installed), papermill-style: a cell
with the test's parameters (the `tiny` size and a temporary `RUN_ROOT`) is inserted right
after the cell tagged `parameters`. Any cell that raises fails the test; the executed notebook
is kept in the test's tmp folder.
"""
import pathlib
from typing import Any, Dict, List

import nbformat
from nbclient import NotebookClient

from tests.conftest import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"
CELL_TIMEOUT_S = 1200


def execute_notebook(name: str, params: Dict[str, Any], out_dir: pathlib.Path) -> Any:
    """Runs a notebook with injected parameters; raises if any cell fails.

    Args:
        name: notebook file name in notebooks/.
        params: parameter values, written as `NAME = repr(value)` after the `parameters` cell.
        out_dir: where the executed notebook is written.

    Returns:
        The executed notebook.
    """
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    tagged = [i for i, cell in enumerate(notebook.cells)
              if "parameters" in cell.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{name}: expected one cell tagged 'parameters', found {tagged}"
    source = "\n".join(f"{key} = {value!r}" for key, value in params.items())
    injected = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    notebook.cells.insert(tagged[0] + 1, injected)
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute()
    finally:
        nbformat.write(notebook, out_dir / name)
    return notebook


def error_outputs(notebook: Any) -> List[str]:
    """Names of the errors any cell output reports."""
    return [out.get("ename", "") for cell in notebook.cells if cell.cell_type == "code"
            for out in cell.get("outputs", []) if out.get("output_type") == "error"]
