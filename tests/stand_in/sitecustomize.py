"""Puts `tests.backbones.tiny_backbone` in place of CSPDarknet53 in every Python process
started with this folder on PYTHONPATH and EFFDET_TEST_STAND_IN=1.

The notebook tests run the CLIs as subprocesses (as a user's notebook does), where the
in-process monkeypatch of the other end-to-end tests cannot reach: this module, imported
by `site` at start-up, patches `effdet_tf.backbones.cspdarknet53.build_cspdarknet53` right
after that module first loads, so training, evaluation, prediction, export and verify all
build (and rebuild from a run folder) the same fast stand-in. tests/test_cspdarknet53.py,
tests/test_darknet_reference.py and the shared tiny run of tests/test_fit_e2e.py keep the
real backbone under test.
"""
import importlib.abc
import importlib.util
import os
import sys

TARGET = "effdet_tf.backbones.cspdarknet53"


class _StandInFinder(importlib.abc.MetaPathFinder):
    """Finds the backbone module as usual, and patches it once it has run."""

    def find_spec(self, fullname, path, target=None):  # pylint: disable=unused-argument
        """The module's own spec, with a loader that patches the module after running it."""
        if fullname != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            from tests.backbones import tiny_backbone  # pylint: disable=import-outside-toplevel
            module.build_cspdarknet53 = tiny_backbone

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("EFFDET_TEST_STAND_IN") == "1":
    sys.meta_path.insert(0, _StandInFinder())
