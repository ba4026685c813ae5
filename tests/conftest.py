"""Shared pytest fixtures: where ../shared is, and gating of real-data tests."""
import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def shared_dir() -> pathlib.Path:
    """Returns the shared folder (datasets, Darknet files), `$EFFDET_SHARED` or ../shared."""
    return pathlib.Path(os.environ.get("EFFDET_SHARED", REPO_ROOT.parent / "shared"))


def require_shared(*parts: str) -> pathlib.Path:
    """Returns a path under the shared folder, skipping (or failing in CI) when absent.

    Args:
        *parts: path components below the shared folder.

    Returns:
        The existing path.
    """
    path = shared_dir().joinpath(*parts)
    if not path.exists():
        reason = (f"{path} is absent (set EFFDET_SHARED to the folder holding datasets/ "
                  "and darknet/)")
        if os.environ.get("EFFDET_REQUIRE_SHARED") == "1":
            pytest.fail(reason + "; EFFDET_REQUIRE_SHARED=1 forbids skipping")
        pytest.skip(reason)
    return path


@pytest.fixture(name="shared")
def fixture_shared():
    """The helper `require_shared`, as a fixture."""
    return require_shared
