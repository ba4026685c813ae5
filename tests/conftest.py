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


def pytest_configure(config):
    """Lets the file order below reach pytest-xdist's `--dist loadfile` scheduler.

    By default xdist hands out whole files in order of their test count, most first, so
    the one-test notebook files, the longest of all (3-5 minutes each on 2 cores), started
    last and one worker ran the last of them alone for minutes at the end of the suite.
    """
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
    """Longest files first (the notebooks, then the other files with a `slow` test), the
    order within each group and file kept: the workers then end close together."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def rank(item):
        if item.path.name.startswith("test_notebook_"):
            return 0
        return 1 if item.path in slow_files else 2

    items.sort(key=rank)
